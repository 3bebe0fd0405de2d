-- Users and the connectors they own.
--
-- Timestamps are TIMESTAMPTZ rather than the seed's TIMESTAMP: every process computes times in
-- the database, and an instant must not change meaning with the server's time zone. Columns
-- that the seed gives a default are also NOT NULL, so code never has to guess what a NULL
-- status or flag would mean.

CREATE TABLE users (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email VARCHAR(255) NOT NULL,
    username VARCHAR(100) NOT NULL,
    hashed_password VARCHAR(255) NOT NULL,
    full_name VARCHAR(255),
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    is_superuser BOOLEAN NOT NULL DEFAULT FALSE,

    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_login_at TIMESTAMPTZ,

    CONSTRAINT users_email_check
        CHECK (email ~* '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Z|a-z]{2,}$')
);

-- The seed declares email and username UNIQUE and also indexes each of them. One unique
-- B-tree per column serves both purposes; a second copy would only slow every insert.
CREATE UNIQUE INDEX idx_users_email ON users (email);
CREATE UNIQUE INDEX idx_users_username ON users (username);
CREATE INDEX idx_users_is_active ON users (is_active) WHERE is_active = TRUE;

CREATE TABLE connectors (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),

    name VARCHAR(255) NOT NULL,
    type VARCHAR(50) NOT NULL,
    description TEXT,

    config JSONB NOT NULL DEFAULT '{}',
    credentials JSONB NOT NULL DEFAULT '{}',

    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    last_tested_at TIMESTAMPTZ,
    test_status VARCHAR(20),

    owner_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,

    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    created_by UUID REFERENCES users (id),
    updated_by UUID REFERENCES users (id),

    CONSTRAINT connectors_test_status_check
        CHECK (test_status IN ('success', 'failed', 'pending'))
);

CREATE INDEX idx_connectors_owner ON connectors (owner_id);
CREATE INDEX idx_connectors_type ON connectors (type);
CREATE INDEX idx_connectors_is_active ON connectors (is_active) WHERE is_active = TRUE;
CREATE INDEX idx_connectors_config ON connectors USING GIN (config);
