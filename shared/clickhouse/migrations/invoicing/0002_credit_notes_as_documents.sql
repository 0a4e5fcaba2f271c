-- Credit notes are documents of their own (R9.7): read, listed and exported with the
-- invoices, so they are written to `invoices` (and their lines to `invoice_lines`) too.
-- Credit notes written before that are copied over once; the reader gives them their line.
INSERT INTO invoices (number, tenant, kind, issued_at, billing_date, period_from, period_to,
                      currency, subtotal, tax, total, usage_cutoff, doc)
SELECT number, tenant, 'credit_note', issued_at, NULL, NULL, NULL,
       JSONExtractString(doc, 'currency'),
       toDecimal128(JSONExtractString(doc, 'subtotal'), 6),
       toDecimal128(JSONExtractString(doc, 'tax'), 6),
       toDecimal128(JSONExtractString(doc, 'total'), 6),
       issued_at, doc
FROM (SELECT * FROM credit_notes LIMIT 1 BY number)
WHERE number NOT IN (SELECT number FROM invoices);
