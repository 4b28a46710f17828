// Package storage is maskpbx's Postgres layer (pgx/v5): embedded migrations
// and repositories for managers, clients, phones, assignments, API tokens and
// the hash-chained audit log. Numbers arrive here already sealed
// (masking.SealedPhone) and are stored as they are.
package storage
