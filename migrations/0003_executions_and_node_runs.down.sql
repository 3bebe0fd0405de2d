DROP TABLE node_runs;
DROP TABLE executions;
