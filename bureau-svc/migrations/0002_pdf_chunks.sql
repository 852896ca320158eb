-- Bill PDFs in chunks of at most 256 KiB, so that no statement binds or returns a whole PDF
-- (see common/src/pdf_store.rs). PDFs stored before move over as one chunk each.
CREATE TABLE bill_pdf_chunk (
    unit_appid TEXT NOT NULL,
    order_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (unit_appid, order_id, seq)
);
INSERT INTO bill_pdf_chunk (unit_appid, order_id, seq, data) SELECT unit_appid, order_id, 0, pdf FROM bill_pdf;
DROP TABLE bill_pdf;
