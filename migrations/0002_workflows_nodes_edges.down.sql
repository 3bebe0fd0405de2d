DROP TABLE edges;
DROP TABLE nodes;
DROP TABLE workflows;
