ALTER TABLE executions RESET (fillfactor);
