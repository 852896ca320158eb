-- The span an order's later work (pushes, deliveries to the bureau) continues as children of:
-- its CreateAuthorization server span, when spans are exported. Empty: a new span of the
-- order's trace.
ALTER TABLE payer_authorization ADD COLUMN trace_parent_id TEXT NOT NULL DEFAULT '';
