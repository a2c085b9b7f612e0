-- The schema of ticketing 0.1.0, the last release before migrations: what its create_all made
-- on postgresql, compiled once from that release's models (commit 8dbf705) with CreateTable and
-- CreateIndex, table by table as create_all emits them. Frozen: never edit it to follow the models.

-- bus
CREATE TABLE bus_outbox (
	id VARCHAR(36) NOT NULL,
	subject VARCHAR(100) NOT NULL,
	source VARCHAR(50) NOT NULL,
	payload BYTEA NOT NULL,
	occurred_at TIMESTAMP WITH TIME ZONE NOT NULL,
	published_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id)
);
CREATE INDEX ix_bus_outbox_unsent ON bus_outbox (occurred_at) WHERE published_at IS NULL;

-- users
CREATE TABLE users_user (
	id VARCHAR(36) NOT NULL,
	email VARCHAR(254) NOT NULL,
	password_hash VARCHAR(200) NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (email)
);

-- tickets
CREATE TABLE tickets_order (
	id VARCHAR(36) NOT NULL,
	ticket_id VARCHAR(36) NOT NULL,
	status VARCHAR(20) NOT NULL,
	version INTEGER NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_tickets_order_ticket ON tickets_order (ticket_id);
CREATE TABLE tickets_ticket (
	id VARCHAR(36) NOT NULL,
	title VARCHAR(200) NOT NULL,
	price BIGINT NOT NULL,
	user_id VARCHAR(36) NOT NULL,
	order_id VARCHAR(36),
	version INTEGER NOT NULL,
	PRIMARY KEY (id)
);

-- orders
CREATE TABLE orders_order (
	id VARCHAR(36) NOT NULL,
	user_id VARCHAR(36) NOT NULL,
	ticket_id VARCHAR(36) NOT NULL,
	status VARCHAR(20) NOT NULL,
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	version INTEGER NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_orders_order_expiry ON orders_order (expires_at);
CREATE INDEX ix_orders_order_user ON orders_order (user_id, created_at);
CREATE UNIQUE INDEX uq_orders_order_live_ticket ON orders_order (ticket_id) WHERE status != 'cancelled';
CREATE TABLE orders_ticket (
	id VARCHAR(36) NOT NULL,
	title VARCHAR(200) NOT NULL,
	price BIGINT NOT NULL,
	version INTEGER NOT NULL,
	PRIMARY KEY (id)
);
