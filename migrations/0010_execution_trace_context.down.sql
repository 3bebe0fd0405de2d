-- Executions forget the trace they ran under.
ALTER TABLE executions
    DROP COLUMN tracestate,
    DROP COLUMN traceparent;
