//! A bill template's logo: WeChat wants it uploaded through its image upload API
//! (`cgi-bin/media/uploadimg`: a JPG or PNG of at most 1 MB) and the URL it answers, on its
//! own image host (`mmbiz.qpic.cn`), given as createbillcard's `logo_url`.

use bytes::Bytes;

/// The largest image uploadimg takes.
pub const MAX_LOGO_BYTES: usize = 1024 * 1024;

/// WeChat's image host: the URLs uploadimg answers.
pub const IMAGE_HOST: &str = "mmbiz.qpic.cn";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    Jpeg,
    Png,
}

impl ImageKind {
    pub fn mime(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Png => "image/png",
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "logo.jpg",
            ImageKind::Png => "logo.png",
        }
    }

    /// The kind the file's signature says, if JPG or PNG.
    pub fn of(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageKind::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageKind::Png)
        } else {
            None
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogoError {
    #[error("the logo image is empty")]
    Empty,
    #[error("the logo image is {0} bytes; WeChat takes at most 1 MB ({MAX_LOGO_BYTES} bytes)")]
    TooLarge(usize),
    #[error("the logo image must be a JPG or PNG file")]
    NotJpgOrPng,
}

/// A logo image uploadimg takes: JPG or PNG, at most 1 MB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoImage {
    bytes: Bytes,
    kind: ImageKind,
}

impl LogoImage {
    pub fn new(bytes: Bytes) -> Result<Self, LogoError> {
        if bytes.is_empty() {
            return Err(LogoError::Empty);
        }
        if bytes.len() > MAX_LOGO_BYTES {
            return Err(LogoError::TooLarge(bytes.len()));
        }
        let kind = ImageKind::of(&bytes).ok_or(LogoError::NotJpgOrPng)?;
        Ok(Self { bytes, kind })
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn kind(&self) -> ImageKind {
        self.kind
    }
}

/// Whether `url` is an image on WeChat's image host (`http` or `https`, as uploadimg answers
/// `http`), or on `also_host` (the image host of the WeChat one talks to: the sandbox in
/// development).
pub fn is_wechat_image_url(url: &str, also_host: Option<&str>) -> bool {
    let Ok(parsed) = url::Url::parse(url) else { return false };
    matches!(parsed.scheme(), "http" | "https")
        && parsed.host_str().is_some_and(|host| host == IMAGE_HOST || Some(host) == also_host)
        && parsed.path().len() > 1
        && url.len() <= 512
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logos_are_jpg_or_png_within_a_megabyte() {
        let png = Bytes::from_static(b"\x89PNG\r\n\x1a\n....");
        assert_eq!(LogoImage::new(png.clone()).unwrap().kind(), ImageKind::Png);
        let jpg = Bytes::from_static(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]);
        assert_eq!(LogoImage::new(jpg).unwrap().kind().mime(), "image/jpeg");
        assert_eq!(LogoImage::new(Bytes::new()), Err(LogoError::Empty));
        assert_eq!(LogoImage::new(Bytes::from_static(b"GIF89a")), Err(LogoError::NotJpgOrPng));
        let mut big = png.to_vec();
        big.resize(MAX_LOGO_BYTES + 1, 0);
        assert_eq!(LogoImage::new(big.into()), Err(LogoError::TooLarge(MAX_LOGO_BYTES + 1)));
    }

    #[test]
    fn logo_urls_are_on_wechats_image_host() {
        let official = "http://mmbiz.qpic.cn/mmbiz/iaL1LJM1mF9aRKPZJkmG8xXhiaHqkKSVMMWeN3hLut7X7hicFNjakmxibMLGWpXrEXB33367o7zHN0CwngnQY7zb7g/0";
        assert!(is_wechat_image_url(official, None));
        assert!(is_wechat_image_url("https://mmbiz.qpic.cn/mmbiz/x/0", None));
        assert!(!is_wechat_image_url("https://example.org/logo.png", None));
        assert!(!is_wechat_image_url("https://mmbiz.qpic.cn.evil.example/x", None));
        assert!(!is_wechat_image_url("ftp://mmbiz.qpic.cn/x", None));
        assert!(!is_wechat_image_url("http://mmbiz.qpic.cn/", None));
        assert!(is_wechat_image_url("http://127.0.0.1:8900/mmbiz/ab/0", Some("127.0.0.1")));
    }
}
