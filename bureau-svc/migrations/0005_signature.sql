-- The certificate (its SHA-256) whose key signed a rendered bill's PDF; NULL for supplied PDFs
-- and for bills rendered without a signing certificate.
ALTER TABLE bill ADD COLUMN signer_sha256 TEXT;
