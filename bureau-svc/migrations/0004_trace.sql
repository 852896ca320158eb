-- The span a bill's later work (the workers' attempts) continues as a child of: its IssueBill
-- server span, when spans are exported. Empty: a new span of the bill's trace.
ALTER TABLE bill ADD COLUMN trace_parent_id TEXT NOT NULL DEFAULT '';
