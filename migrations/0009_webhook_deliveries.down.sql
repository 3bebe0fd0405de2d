-- Replays are no longer recognised; executions stay.
DROP TABLE webhook_deliveries;
