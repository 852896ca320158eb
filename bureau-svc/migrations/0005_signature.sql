-- The certificate (its SHA-256) whose key signed a rendered bill's PDF; NULL for supplied PDFs
-- and for bills rendered without a signing certificate.
ALTER TABLE bill ADD COLUMN signer_sha256 TEXT;
-- The SHA-256 of the PDF as the unit supplied it, when the bureau signed it (pdf_sha256 is then
-- the signed file's): what a repeated IssueBill is compared with.
ALTER TABLE bill ADD COLUMN supplied_sha256 TEXT;
