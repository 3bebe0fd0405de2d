-- Every token stops working; users and what they own stay.
DROP TABLE api_tokens;
