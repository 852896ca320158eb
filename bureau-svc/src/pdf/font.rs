//! The bill's font, embedded: WenQuanYi Micro Hei (assets/fonts, Apache-2.0) draws Chinese,
//! Latin letters and digits alike. Each PDF carries a subset of it — only the glyphs that bill
//! uses, cut by `subsetter` — as a CID-keyed TrueType font with Identity encoding, its widths
//! and a ToUnicode map, so that every viewer draws the bill without fonts of its own and its
//! text stays extractable.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::OnceLock;

use pdf_writer::types::{CidFontType, FontFlags, SystemInfo, UnicodeCmap};
use pdf_writer::{Chunk, Filter, Finish, Name, Rect, Ref, Str};
use subsetter::GlyphRemapper;

const FONT_FILE: &[u8] = include_bytes!("../../assets/fonts/wqy-microhei.ttc");
/// WenQuanYi Micro Hei (proportional) in the collection; index 1 is its monospaced face.
const FACE_INDEX: u32 = 0;
/// The PostScript name of the embedded subset (the `ABCDEF+` tag marks a subset).
const SUBSET_NAME: &[u8] = b"FSCBIL+WenQuanYiMicroHei";

/// The parsed font, once per process.
pub struct BillFont {
    face: ttf_parser::Face<'static>,
    units_per_em: f32,
    /// Drawn for characters the font lacks.
    fallback: ttf_parser::GlyphId,
}

pub fn font() -> &'static BillFont {
    static FONT: OnceLock<BillFont> = OnceLock::new();
    FONT.get_or_init(|| {
        let face = ttf_parser::Face::parse(FONT_FILE, FACE_INDEX).expect("the shipped font parses");
        let fallback = face.glyph_index('?').unwrap_or_default();
        let units_per_em = f32::from(face.units_per_em());
        BillFont { face, units_per_em, fallback }
    })
}

impl BillFont {
    fn glyph(&self, ch: char) -> ttf_parser::GlyphId {
        self.face.glyph_index(ch).unwrap_or(self.fallback)
    }

    /// Advance width of a glyph, in em.
    fn advance(&self, glyph: ttf_parser::GlyphId) -> f32 {
        f32::from(self.face.glyph_hor_advance(glyph).unwrap_or(0)) / self.units_per_em
    }

    /// Width of `text` in em.
    pub fn width_em(&self, text: &str) -> f32 {
        text.chars().map(|ch| self.advance(self.glyph(ch))).sum()
    }

    /// In thousandths of an em, as PDF font metrics are.
    fn thousandths(&self, units: i16) -> f32 {
        f32::from(units) * 1000.0 / self.units_per_em
    }
}

/// The glyphs one document draws, numbered as in its embedded subset.
pub struct GlyphSet {
    remapper: GlyphRemapper,
    /// New glyph id → the character it draws (for the ToUnicode map).
    chars: BTreeMap<u16, char>,
}

impl Default for GlyphSet {
    fn default() -> Self {
        Self { remapper: GlyphRemapper::new(), chars: BTreeMap::new() }
    }
}

impl GlyphSet {
    /// `text` as the 2-byte codes (CIDs) of the subset, adding its glyphs to the set.
    pub fn encode(&mut self, text: &str) -> Vec<u8> {
        let font = font();
        let mut codes = Vec::with_capacity(text.len() * 2);
        for ch in text.chars() {
            let cid = self.remapper.remap(font.glyph(ch).0);
            self.chars.entry(cid).or_insert(ch);
            codes.extend_from_slice(&cid.to_be_bytes());
        }
        codes
    }

    /// Writes the font (Type0 → CIDFontType2 → descriptor → compressed subset, and the
    /// ToUnicode map) with `font_ref` as its Type0 dictionary; `next` hands out object ids.
    pub fn embed(self, chunk: &mut Chunk, font_ref: Ref, mut next: impl FnMut() -> Ref) -> Result<(), String> {
        let font = font();
        let (cid_ref, descriptor_ref, file_ref, cmap_ref) = (next(), next(), next(), next());
        let subset = subsetter::subset(FONT_FILE, FACE_INDEX, &self.remapper)
            .map_err(|e| format!("cannot subset the bill font: {e:?}"))?;
        let system_info = SystemInfo { registry: Str(b"Adobe"), ordering: Str(b"Identity"), supplement: 0 };

        chunk
            .type0_font(font_ref)
            .base_font(Name(SUBSET_NAME))
            .encoding_predefined(Name(b"Identity-H"))
            .descendant_font(cid_ref)
            .to_unicode(cmap_ref);

        let widths: Vec<f32> =
            self.remapper.remapped_gids().map(|old| font.advance(ttf_parser::GlyphId(old)) * 1000.0).collect();
        let mut cid = chunk.cid_font(cid_ref);
        cid.subtype(CidFontType::Type2)
            .base_font(Name(SUBSET_NAME))
            .system_info(system_info)
            .font_descriptor(descriptor_ref)
            .default_width(0.0)
            .cid_to_gid_map_predefined(Name(b"Identity"));
        cid.widths().consecutive(0, widths);
        cid.finish();

        let face = &font.face;
        let bbox = face.global_bounding_box();
        chunk
            .font_descriptor(descriptor_ref)
            .name(Name(SUBSET_NAME))
            .flags(FontFlags::NON_SYMBOLIC)
            .bbox(Rect::new(
                font.thousandths(bbox.x_min),
                font.thousandths(bbox.y_min),
                font.thousandths(bbox.x_max),
                font.thousandths(bbox.y_max),
            ))
            .italic_angle(0.0)
            .ascent(font.thousandths(face.ascender()))
            .descent(font.thousandths(face.descender()))
            .cap_height(font.thousandths(face.capital_height().unwrap_or(face.ascender())))
            .stem_v(80.0)
            .font_file2(file_ref);

        chunk.stream(file_ref, &deflate(&subset)).filter(Filter::FlateDecode);

        let mut cmap = UnicodeCmap::new(Name(b"Custom"), system_info);
        for (cid, ch) in &self.chars {
            cmap.pair(*cid, *ch);
        }
        chunk.cmap(cmap_ref, cmap.finish().as_slice());
        Ok(())
    }
}

/// zlib-compressed, for FlateDecode streams.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}
