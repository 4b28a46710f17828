package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Store is the Postgres repository of maskpbx. It is safe for concurrent use.
type Store struct {
	pool        *pgxpool.Pool
	auditKey    []byte      // keys the audit chain (WithAudit)
	auditAnchor AuditAnchor // where the chain's head is anchored; may be nil
}

func parseConfig(url string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx echoes the URL (with its password) in parse errors; keep it out.
		return nil, errors.New("storage: invalid database URL")
	}
	if !strings.Contains(url, "pool_max_conns") {
		// pgx's default (4 on a 2-core machine) makes call routing wait
		// behind the CDR writer and the recorder under load.
		cfg.MaxConns = defaultMaxConns
	}
	return cfg, nil
}

// Open connects to the database at url and checks that it answers.
func Open(ctx context.Context, url string, opts ...Option) (*Store, error) {
	cfg, err := parseConfig(url)
	if err != nil {
		return nil, err
	}
	return open(ctx, cfg, opts)
}

// OpenConns is Open with a pool of its own of exactly conns connections,
// whatever the URL says: for a component that must not queue for a
// connection behind call handling (the CDR writer, which needs one).
func OpenConns(ctx context.Context, url string, conns int32, opts ...Option) (*Store, error) {
	cfg, err := parseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = conns
	return open(ctx, cfg, opts)
}

func open(ctx context.Context, cfg *pgxpool.Config, opts []Option) (*Store, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("storage: connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("storage: ping: %w", err)
	}
	s := &Store{pool: pool}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Close releases the connections.
func (s *Store) Close() { s.pool.Close() }

// Ping reports whether the database answers (for /healthz).
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// inTx runs fn in a transaction that commits only if fn returns nil, so a
// failed request never leaves a half-written row.
// An audit row it wrote is anchored once the transaction has committed.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	var st *storeTx
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		st = &storeTx{Tx: tx, store: s}
		return fn(st)
	})
	if err != nil {
		return err
	}
	// The rows have committed, so the caller's action succeeded: an anchor
	// that could not advance stays behind (weaker, not wrong), and
	// VerifyAudit reports an anchor it cannot read or write.
	_ = s.anchorHead(st.head)
	return nil
}

func pgCode(err error) (code, constraint string) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code, pe.ConstraintName
	}
	return "", ""
}

// defaultMaxConns is the pool size unless the URL sets pool_max_conns.
const defaultMaxConns = 16

const (
	pgUniqueViolation     = "23505"
	pgForeignKeyViolation = "23503"
	pgInvalidText         = "22P02"
)
