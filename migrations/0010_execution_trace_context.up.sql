-- The W3C trace context an execution runs under: the `traceparent` and `tracestate` of the
-- control plane's span for the execution. Every job of the execution reads it from here, so
-- that node runs on any worker, successors and retries included, join the trace of the
-- request that started it. NULL when the control plane exported no traces.
--
-- Expand only: older binaries neither write nor read the columns.

ALTER TABLE executions
    ADD COLUMN traceparent VARCHAR(55),
    ADD COLUMN tracestate VARCHAR(512);
