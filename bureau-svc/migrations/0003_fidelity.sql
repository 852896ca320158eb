-- Consecutive inserts WeChat answered "invalid card status" (retried a bounded number of times),
-- and uploads whose copy at WeChat's pdf_url differed from the PDF sent (re-uploaded once).
ALTER TABLE bill ADD COLUMN card_status_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE bill ADD COLUMN pdf_mismatches BIGINT NOT NULL DEFAULT 0;
-- A unit's logo as an image to upload through WeChat's image upload (media/uploadimg) before
-- its template is created; logo_url then holds the URL WeChat answered. Empty logo_url: not
-- uploaded yet.
ALTER TABLE unit ADD COLUMN logo_image BLOB;
ALTER TABLE unit ADD COLUMN logo_sha256 TEXT;
