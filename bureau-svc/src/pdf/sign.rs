//! The bureau's digital signature on the bills it renders: a PDF signature field whose value is
//! a detached CMS (PKCS #7) SignedData (`adbe.pkcs7.detached`), ECDSA P-256 with SHA-256, over
//! every byte of the file but the signature itself, with the bureau's certificate inside. Any
//! PDF reader (Adobe Reader, poppler's `pdfsig`, ...) verifies it and shows a change to one byte.
//!
//! The file is written with room for the signature (a `/Contents` placeholder and a
//! `/ByteRange` of fixed width); then the ranges are filled in, digested and signed, and the
//! signature written into its room. The CMS structures are RustCrypto's (`cms`, `x509-cert`,
//! `der`, `p256`, which also reads and makes keys); only their assembly is here. The signature
//! itself is ring's, whose P-256 is assembly (in the build already, for TLS): signing a 64 KiB
//! supplied PDF took 547 µs with `p256`'s generic arithmetic and takes 218 µs with ring.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{OctetString, SetOfVec, UtcTime};
use der::oid::ObjectIdentifier;
use der::oid::db::rfc5911::{ID_CONTENT_TYPE, ID_DATA, ID_MESSAGE_DIGEST, ID_SIGNED_DATA, ID_SIGNING_TIME};
use der::oid::db::rfc5912::{ECDSA_WITH_SHA_256, ID_SHA_256};
use der::{Any, DecodePem, Encode, EncodePem};
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use pdf_writer::types::{AnnotationFlags, FieldType, SigFlags};
use pdf_writer::writers::Catalog;
use pdf_writer::{Chunk, Finish, Name, Rect, Ref, Str, TextStr};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::TbsCertificate;
use x509_cert::attr::Attribute;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::ext::pkix::{KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name as X509Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};

/// Bytes reserved for the CMS signature: one certificate and a P-256 signature take about
/// 1 KiB; a certificate with long names or many extensions fits too.
const SIGNATURE_ROOM: usize = 4 * 1024;
/// The room for the signature as written: `2 × SIGNATURE_ROOM` zeros as a literal string,
/// `(00…0)`, which both PDF writers copy out in one piece (lopdf writes a hex string a byte at
/// a time through `write!`, 5% of the bureau's CPU per signed bill). Signing turns its
/// parentheses into angle brackets: the hex string `<3082…000>` it becomes has the same length.
const ROOM_DIGITS: [u8; 2 * SIGNATURE_ROOM] = [b'0'; 2 * SIGNATURE_ROOM];
/// Each `/ByteRange` number is written as this 10-digit placeholder, then overwritten.
const RANGE_PLACEHOLDER: i32 = 1_111_111_111;

/// Where a document's signature goes: its form field (a widget on the last page) and the
/// signature dictionary the field's value points to.
pub struct SignatureSlot {
    pub field: Ref,
    pub signature: Ref,
}

impl SignatureSlot {
    /// The document's form: one signature field; signatures exist and the file is appended to
    /// only.
    pub fn write_form(&self, catalog: &mut Catalog<'_>) {
        catalog.form().fields([self.field]).sig_flags(SigFlags::SIGNATURES_EXIST | SigFlags::APPEND_ONLY);
    }

    /// The field as a widget over `rect` of `page`, and the signature dictionary with room for
    /// the signature.
    pub fn write_signature(&self, chunk: &mut Chunk, page: Ref, rect: Rect, signer_name: &str, signed_at: i64) {
        let mut field = chunk.form_field(self.field);
        field.field_type(FieldType::Signature).partial_name(TextStr("BureauSignature"));
        field.pair(Name(b"V"), self.signature);
        let mut widget = field.into_annotation();
        widget.rect(rect).page(page).flags(AnnotationFlags::PRINT | AnnotationFlags::LOCKED);
        widget.finish();

        let mut signature = chunk.indirect(self.signature).dict();
        signature.pair(Name(b"Type"), Name(b"Sig"));
        signature.pair(Name(b"Filter"), Name(b"Adobe.PPKLite"));
        signature.pair(Name(b"SubFilter"), Name(b"adbe.pkcs7.detached"));
        signature.insert(Name(b"ByteRange")).array().items([
            0,
            RANGE_PLACEHOLDER,
            RANGE_PLACEHOLDER,
            RANGE_PLACEHOLDER,
        ]);
        signature.pair(Name(b"Contents"), Str(&ROOM_DIGITS));
        signature.pair(Name(b"Name"), TextStr(signer_name));
        signature.pair(Name(b"Reason"), TextStr("财政电子票据"));
        signature.pair(Name(b"M"), Str(pdf_date(signed_at).as_bytes()));
        signature.finish();
    }
}

/// A signed PDF and the SHA-256 (hex) of all its bytes and of the PDF it was made from.
pub struct SignedPdf {
    pub pdf: Vec<u8>,
    pub sha256: String,
    /// Of the bytes before the signature's update: for a supplied PDF, the PDF as supplied.
    pub original_sha256: String,
}

/// The bureau's signing certificate and key. Debug shows the certificate's fingerprint only.
pub struct BillSigner {
    key: EcdsaKeyPair,
    /// The nonces' source (the operating system's).
    random: SystemRandom,
    certificate: Certificate,
    fingerprint: String,
}

impl fmt::Debug for BillSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BillSigner").field("certificate_sha256", &self.fingerprint).finish_non_exhaustive()
    }
}

impl BillSigner {
    /// From a PEM certificate and its PEM private key (PKCS #8 `PRIVATE KEY` or SEC1 `EC
    /// PRIVATE KEY`, P-256). The key must be the certificate's.
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<Self, String> {
        let certificate = Certificate::from_pem(certificate_pem.trim())
            .map_err(|e| format!("the signing certificate is not a PEM X.509 certificate: {e}"))?;
        let key = SigningKey::from_pkcs8_pem(key_pem.trim())
            .or_else(|_| p256::SecretKey::from_sec1_pem(key_pem.trim()).map(SigningKey::from))
            .map_err(|_| "the signing key is not a PEM P-256 private key (PKCS #8 or SEC1)".to_owned())?;
        let public = key
            .verifying_key()
            .to_public_key_der()
            .map_err(|e| format!("the signing key's public key cannot be encoded: {e}"))?;
        let certified = certificate
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| format!("the signing certificate's public key cannot be encoded: {e}"))?;
        if public.as_bytes() != certified.as_slice() {
            return Err("the signing key does not belong to the signing certificate".to_owned());
        }
        Self::new(key, certificate)
    }

    fn new(key: SigningKey, certificate: Certificate) -> Result<Self, String> {
        let der = certificate.to_der().map_err(|e| format!("the signing certificate cannot be encoded: {e}"))?;
        let fingerprint = hex::encode(Sha256::digest(&der));
        let random = SystemRandom::new();
        // PKCS #8 with the public key inside, as ring reads it; never shown in an error.
        let pkcs8 = key.to_pkcs8_der().map_err(|_| "the signing key cannot be encoded".to_owned())?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_bytes(), &random)
            .map_err(|e| format!("the signing key is not usable: {e}"))?;
        Ok(Self { key, random, certificate, fingerprint })
    }

    /// A new key and a self-signed certificate naming `bureau`, valid for a year: for the dev
    /// stack and tests, never for production. Returns the signer and its PEM certificate and
    /// PEM (PKCS #8) key.
    pub fn generate_throwaway(bureau: &str) -> Result<(Self, String, String), String> {
        // A random scalar (thread-local ChaCha, seeded by the OS); the rare value that is no
        // valid key is drawn again.
        let key = loop {
            if let Ok(secret) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break SigningKey::from(secret);
            }
        };
        let subject = X509Name::from_str(&format!("CN={},O=fiscalbill dev stack (not for production)", rdn(bureau)))
            .map_err(|e| format!("certificate subject: {e}"))?;
        let public = SubjectPublicKeyInfoOwned::from_key(key.verifying_key())
            .map_err(|e| format!("certificate public key: {e}"))?;
        let serial = SerialNumber::new(&rand::random::<[u8; 16]>()[..]).map_err(|e| e.to_string())?;
        let validity = Validity::from_now(Duration::from_secs(365 * 86_400)).map_err(|e| e.to_string())?;
        let builder = CertificateBuilder::new(DocumentSigner { subject }, serial, validity, public)
            .map_err(|e| format!("certificate: {e}"))?;
        let certificate = builder.build::<_, DerSignature>(&key).map_err(|e| format!("certificate: {e}"))?;
        let certificate_pem = certificate.to_pem(LineEnding::LF).map_err(|e| e.to_string())?;
        let key_pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| e.to_string())?.to_string();
        Ok((Self::new(key, certificate)?, certificate_pem, key_pem))
    }

    /// SHA-256 of the certificate (DER), hex: what GetBill reports as the signer.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Signs a PDF someone else made, as an incremental update that keeps its bytes: an
    /// invisible signature field on its last page (in its form, created if it has none) whose
    /// signature covers the original file and the update.
    /// Takes the PDF by value: it becomes the first part of the output without another copy,
    /// and only its structure is parsed (see [`structure_only`]), so a large PDF is held about
    /// twice at the peak (the original and the output).
    pub fn sign_supplied(&self, pdf: Vec<u8>, signer_name: &str, signed_at: i64) -> Result<SignedPdf, String> {
        use lopdf::{Dictionary, Object, StringFormat};
        let error = |e: lopdf::Error| format!("cannot add a signature to the PDF: {e}");
        let structure = lopdf::Document::load_mem_with_options(&pdf, lopdf::LoadOptions::with_filter(structure_only))
            .map_err(error)?;
        let original_len = pdf.len();
        let mut document = lopdf::IncrementalDocument::create_from(pdf, structure);
        let previous = document.get_prev_documents();
        let catalog_id = previous.trailer.get(b"Root").and_then(Object::as_reference).map_err(error)?;
        let last_page = *previous.get_pages().values().last().ok_or("the PDF has no pages")?;
        // An AcroForm given by reference is changed where it lives.
        let form_id =
            previous.get_dictionary(catalog_id).map_err(error)?.get(b"AcroForm").and_then(Object::as_reference).ok();
        document.opt_clone_object_to_new_document(catalog_id).map_err(error)?;
        document.opt_clone_object_to_new_document(last_page).map_err(error)?;
        if let Some(form_id) = form_id {
            document.opt_clone_object_to_new_document(form_id).map_err(error)?;
        }
        let new = &mut document.new_document;
        let range =
            Object::Array(vec![0.into(), RANGE_PLACEHOLDER.into(), RANGE_PLACEHOLDER.into(), RANGE_PLACEHOLDER.into()]);
        let mut signature = Dictionary::new();
        signature.set("Type", Object::Name(b"Sig".to_vec()));
        signature.set("Filter", Object::Name(b"Adobe.PPKLite".to_vec()));
        signature.set("SubFilter", Object::Name(b"adbe.pkcs7.detached".to_vec()));
        signature.set("ByteRange", range);
        signature.set("Contents", Object::String(ROOM_DIGITS.to_vec(), StringFormat::Literal));
        signature.set("Name", Object::string_literal(signer_name.as_bytes().to_vec()));
        signature.set("M", Object::string_literal(pdf_date(signed_at)));
        let signature_id = new.add_object(signature);
        let mut field = Dictionary::new();
        field.set("Type", Object::Name(b"Annot".to_vec()));
        field.set("Subtype", Object::Name(b"Widget".to_vec()));
        field.set("FT", Object::Name(b"Sig".to_vec()));
        // Field names are unique in a form: the PDF may hold our signature from before.
        field.set("T", Object::string_literal(format!("BureauSignature{}", signature_id.0)));
        field.set("V", signature_id);
        field.set("Rect", Object::Array(vec![0.into(), 0.into(), 0.into(), 0.into()]));
        field.set("P", last_page);
        field.set("F", 132); // print, locked
        let field_id = new.add_object(field);

        let page = new.get_dictionary_mut(last_page).map_err(error)?;
        match page.get_mut(b"Annots") {
            Ok(Object::Array(annotations)) => annotations.push(field_id.into()),
            _ => page.set("Annots", Object::Array(vec![field_id.into()])),
        }
        let form = match form_id {
            Some(form_id) => new.get_dictionary_mut(form_id).map_err(error)?,
            None => {
                let catalog = new.get_dictionary_mut(catalog_id).map_err(error)?;
                if !matches!(catalog.get(b"AcroForm"), Ok(Object::Dictionary(_))) {
                    catalog.set("AcroForm", Dictionary::new());
                }
                catalog.get_mut(b"AcroForm").and_then(Object::as_dict_mut).map_err(error)?
            }
        };
        match form.get_mut(b"Fields") {
            Ok(Object::Array(fields)) => fields.push(field_id.into()),
            _ => form.set("Fields", Object::Array(vec![field_id.into()])),
        }
        form.set("SigFlags", 3);
        let mut out = Vec::with_capacity(original_len + 2 * SIGNATURE_ROOM + 1024);
        document.save_to(&mut out).map_err(|e| format!("cannot add a signature to the PDF: {e}"))?;
        drop(document);
        self.sign_from(out, original_len, signed_at)
    }

    /// Signs a PDF written with a [`SignatureSlot`]: fills in the byte ranges, then the CMS
    /// signature over them.
    pub fn sign(&self, pdf: Vec<u8>, signed_at: i64) -> Result<Vec<u8>, String> {
        Ok(self.sign_from(pdf, 0, signed_at)?.pdf)
    }

    /// [`Self::sign`], looking for the signature's room and byte range only from `start` on:
    /// a supplied PDF may carry signatures of its own before our update.
    fn sign_from(&self, mut pdf: Vec<u8>, start: usize, signed_at: i64) -> Result<SignedPdf, String> {
        let room = [&b"("[..], &ROOM_DIGITS, b")"].concat();
        let contents_start = start + find(&pdf[start..], &room).ok_or("the PDF has no room for a signature")?;
        let contents_end = contents_start + room.len();
        pdf[contents_start] = b'<';
        pdf[contents_end - 1] = b'>';
        // The byte-range array as written (its placeholders make it wide enough), overwritten
        // in place with the real ranges, padded with spaces.
        let key = start + find(&pdf[start..], b"/ByteRange").ok_or("the PDF has no signature byte range")?;
        let open = key + find(&pdf[key..], b"[").ok_or("the PDF's byte range is not an array")?;
        let close = open + find(&pdf[open..], b"]").ok_or("the PDF's byte range is not an array")?;
        let filled = format!("[0 {contents_start} {contents_end} {}", pdf.len() - contents_end);
        if filled.len() > close - open {
            return Err("the PDF's byte range has no room for the ranges".to_owned());
        }
        let filled = format!("{filled:<width$}", width = close - open);
        pdf[open..close].copy_from_slice(filled.as_bytes());

        // The original, the signed ranges and the whole file share their bulk, the part before
        // the signature: digested once for the three.
        let mut whole = Sha256::new();
        whole.update(&pdf[..start]);
        let original_sha256 = hex::encode(whole.clone().finalize());
        whole.update(&pdf[start..contents_start]);
        let mut ranges = whole.clone();
        ranges.update(&pdf[contents_end..]);
        let cms = self.signed_data(&ranges.finalize(), signed_at)?;
        if cms.len() > SIGNATURE_ROOM {
            return Err(format!("the signature ({} bytes) does not fit its room", cms.len()));
        }
        let hex = hex::encode_upper(&cms);
        pdf[contents_start + 1..contents_start + 1 + hex.len()].copy_from_slice(hex.as_bytes());
        // The rest of the room stays zero-padded, as PDF signatures are.
        whole.update(&pdf[contents_start..]);
        Ok(SignedPdf { sha256: hex::encode(whole.finalize()), original_sha256, pdf })
    }

    /// A detached CMS SignedData over a message whose SHA-256 is `digest`.
    fn signed_data(&self, digest: &[u8], signed_at: i64) -> Result<Vec<u8>, String> {
        let error = |e: der::Error| format!("CMS signature: {e}");
        let attribute = |oid: ObjectIdentifier, value: Any| -> Result<Attribute, String> {
            Ok(Attribute { oid, values: SetOfVec::try_from(vec![value]).map_err(error)? })
        };
        let signing_time = UtcTime::from_unix_duration(Duration::from_secs(signed_at.max(0) as u64)).map_err(error)?;
        let signed_attrs = SetOfVec::try_from(vec![
            attribute(ID_CONTENT_TYPE, Any::encode_from(&ID_DATA).map_err(error)?)?,
            attribute(ID_SIGNING_TIME, Any::encode_from(&Time::UtcTime(signing_time)).map_err(error)?)?,
            attribute(ID_MESSAGE_DIGEST, Any::encode_from(&OctetString::new(digest).map_err(error)?).map_err(error)?)?,
        ])
        .map_err(error)?;
        // What is signed is the DER of the attributes as a SET (RFC 5652, 5.4).
        let signature = self
            .key
            .sign(&self.random, &signed_attrs.to_der().map_err(error)?)
            .map_err(|_| "CMS signature: signing failed".to_owned())?;
        let tbs = self.certificate.tbs_certificate();
        let signer_info = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer().clone(),
                serial_number: tbs.serial_number().clone(),
            }),
            digest_alg: AlgorithmIdentifierOwned { oid: ID_SHA_256, parameters: None },
            signed_attrs: Some(signed_attrs),
            signature_algorithm: AlgorithmIdentifierOwned { oid: ECDSA_WITH_SHA_256, parameters: None },
            signature: OctetString::new(signature.as_ref()).map_err(error)?,
            unsigned_attrs: None,
        };
        let signed_data = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![AlgorithmIdentifierOwned { oid: ID_SHA_256, parameters: None }])
                .map_err(error)?,
            encap_content_info: EncapsulatedContentInfo { econtent_type: ID_DATA, econtent: None },
            certificates: Some(
                CertificateSet::try_from(vec![CertificateChoices::Certificate(self.certificate.clone())])
                    .map_err(error)?,
            ),
            crls: None,
            signer_infos: SignerInfos::try_from(vec![signer_info]).map_err(error)?,
        };
        let content_info =
            ContentInfo { content_type: ID_SIGNED_DATA, content: Any::encode_from(&signed_data).map_err(error)? };
        content_info.to_der().map_err(error)
    }
}

/// A self-signed certificate for signing documents: key usage digital signature and
/// non-repudiation.
struct DocumentSigner {
    subject: X509Name,
}

impl BuilderProfile for DocumentSigner {
    fn get_issuer(&self, subject: &X509Name) -> X509Name {
        subject.clone()
    }

    fn get_subject(&self) -> X509Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let mut extensions = Vec::new();
        extensions.push(SubjectKeyIdentifier::try_from(spk)?.to_extension(tbs.subject(), &extensions)?);
        let usage = KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation);
        extensions.push(usage.to_extension(tbs.subject(), &extensions)?);
        Ok(extensions)
    }
}

/// `value` escaped for an RFC 4514 distinguished name.
fn rdn(value: &str) -> String {
    value.chars().fold(String::new(), |mut out, ch| {
        if matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(ch);
        out
    })
}

/// `D:YYYYMMDDHHmmSS+08'00'`, China time.
fn pdf_date(unix_secs: i64) -> String {
    let local = unix_secs + 8 * 3600;
    let date = super::render::china_date(unix_secs).replace('-', "");
    let seconds = local.rem_euclid(86_400);
    format!("D:{date}{:02}{:02}{:02}+08'00'", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// A load filter that keeps a PDF's structure and not its content: a stream becomes its
/// dictionary, except object and cross-reference streams, which hold structure. Signing needs
/// the catalog, the page tree and the form, never what a page draws, and an incremental update
/// rewrites none of the original objects. (lopdf keeps the object as changed in place for
/// top-level objects and the returned one for members of object streams, which are never
/// streams.)
fn structure_only(id: lopdf::ObjectId, object: &mut lopdf::Object) -> Option<(lopdf::ObjectId, lopdf::Object)> {
    if let lopdf::Object::Stream(stream) = object
        && !stream.dict.has_type(b"ObjStm")
        && !stream.dict.has_type(b"XRef")
    {
        let dict = std::mem::take(&mut stream.dict);
        *object = lopdf::Object::Dictionary(dict);
    }
    Some((id, object.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throwaway_signer_round_trips_through_pem() {
        let (signer, certificate, key) = BillSigner::generate_throwaway("沙箱市财政局, 测试").unwrap();
        let again = BillSigner::from_pem(&certificate, &key).unwrap();
        assert_eq!(again.fingerprint(), signer.fingerprint());
        assert!(!format!("{signer:?}").contains("PRIVATE"), "Debug never shows the key");
        let (_, _, other_key) = BillSigner::generate_throwaway("另一个").unwrap();
        assert!(BillSigner::from_pem(&certificate, &other_key).unwrap_err().contains("does not belong"));
        assert!(BillSigner::from_pem("not pem", &key).is_err());
    }

    #[test]
    fn dates_are_in_china_time() {
        assert_eq!(pdf_date(1_700_000_000), "D:20231115061320+08'00'");
    }
}
