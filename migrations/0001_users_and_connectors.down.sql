DROP TABLE connectors;
DROP TABLE users;
