-- API tokens: how API clients authenticate (`Authorization: Bearer <token>`).
--
-- A token is shown to its owner once, when it is created; only its SHA-256 digest is kept.
-- Tokens are 256 random bits, so a fast digest is enough: there is nothing to guess, and a
-- slow password hash on every request would cost milliseconds of CPU for no gain. The prefix
-- is the token's first characters, kept so that listings can tell tokens apart.
--
-- Revoking keeps the row (revoked_at), so an audit can still see which token did what.

CREATE TABLE api_tokens (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name VARCHAR(100) NOT NULL,
    token_hash BYTEA NOT NULL,
    prefix VARCHAR(16) NOT NULL,

    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    expires_at TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,

    CONSTRAINT api_tokens_name_check CHECK (length(btrim(name)) > 0),
    CONSTRAINT api_tokens_hash_check CHECK (octet_length(token_hash) = 32),
    CONSTRAINT api_tokens_expiry_check CHECK (expires_at IS NULL OR expires_at > created_at)
);

CREATE UNIQUE INDEX idx_api_tokens_hash ON api_tokens (token_hash);
CREATE INDEX idx_api_tokens_user ON api_tokens (user_id, created_at DESC);
