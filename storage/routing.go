package storage

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// ClientIndex is one of a client's numbers as routing knows it: its blind
// index, and the client who owns it (never the number).
type ClientIndex struct {
	BlindIndex []byte
	Client     Client
}

const clientIndexSelect = `SELECT p.blind_index, c.id, c.code, c.name, c.segment, c.created_at,
	coalesce(a.primary_id, ''), coalesce(a.partners, '{}')
	FROM client_phones p JOIN clients c ON c.id = p.client_id
	LEFT JOIN (SELECT client_id,
			max(manager_id::text) FILTER (WHERE kind = 'primary') AS primary_id,
			array_agg(manager_id::text ORDER BY valid_from, id) FILTER (WHERE kind = 'partner') AS partners
		FROM assignments WHERE valid_until IS NULL GROUP BY client_id) a ON a.client_id = c.id
	WHERE p.index_key_id = $1 `

// ClientIndexes returns the blind index of every number of index key
// indexKeyID with its client: what the PBX's routing cache holds. With ids
// given, only those clients' (an unknown id is simply absent).
func (s *Store) ClientIndexes(ctx context.Context, indexKeyID string, ids ...string) ([]ClientIndex, error) {
	sql, args := clientIndexSelect, []any{indexKeyID}
	if ids != nil {
		valid := ids[:0:0]
		for _, id := range ids {
			if validUUID(id) {
				valid = append(valid, id)
			}
		}
		sql, args = sql+`AND c.id = ANY($2::uuid[])`, append(args, valid)
	}
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (ClientIndex, error) {
		var ci ClientIndex
		c := &ci.Client
		return ci, r.Scan(&ci.BlindIndex, &c.ID, &c.Code, &c.Name, &c.Segment, &c.CreatedAt, &c.ManagerID, &c.PartnerIDs)
	})
}

// FillCDRClient names the client of calls whose CDRs were written without
// one: calls of a first-time caller the PBX routed while Postgres was down,
// whose events named a client the database did not have yet. A CDR that
// names a client keeps him.
func (s *Store) FillCDRClient(ctx context.Context, clientID string, callIDs []string) error {
	_, err := s.pool.Exec(ctx, `UPDATE cdrs SET client_id = $1, updated_at = now()
		WHERE call_id = ANY($2::uuid[]) AND client_id IS NULL`, clientID, callIDs)
	return err
}
