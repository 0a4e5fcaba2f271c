-- A run of adjustment lines alike but for the period each names (late usage, R9.4: an old
-- access grant corrects dozens of periods by the same line) is one row: its first line,
-- with every period it names in `periods`. Empty for a line of its own period: every row
-- written before this one.
ALTER TABLE invoice_lines ADD COLUMN IF NOT EXISTS periods Array(Tuple(Date32, Date32))
    DEFAULT [];
