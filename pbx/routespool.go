package pbx

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// The pending callers on disk: a node that dies while Postgres is down
// still writes, at its next start, the client rows of the callers it
// routed. The file holds what the database would (the number sealed and
// blind-indexed, never in clear), with mode 0600.

// spooledCaller is one pending caller in the spool file.
type spooledCaller struct {
	Client storage.Client      `json:"client"`
	Phone  masking.SealedPhone `json:"phone"`
	Calls  []string            `json:"calls,omitempty"`
}

// SpoolPending keeps the pending callers in the file at path as well,
// and takes back the ones a previous run left there. Call it before Load.
func (c *RouteCache) SpoolPending(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pbx: pending callers: %w", err)
	}
	var spooled []spooledCaller
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &spooled); err != nil {
			return fmt.Errorf("pbx: pending callers in %s: %w", path, err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.spool = path
	for _, s := range spooled {
		c.pending[string(s.Phone.BlindIndex)] = pendingCaller{client: s.Client, phone: s.Phone, calls: s.Calls}
	}
	return nil
}

// savePending writes the pending callers to the spool file (synced, then
// renamed over the old one). c.mu is held.
func (c *RouteCache) savePending() {
	if c.spool == "" {
		return
	}
	spooled := make([]spooledCaller, 0, len(c.pending))
	for _, p := range c.pending {
		spooled = append(spooled, spooledCaller{Client: p.client, Phone: p.phone, Calls: p.calls})
	}
	raw, _ := json.Marshal(spooled)
	if err := writeSynced(c.spool, raw); err != nil {
		c.logger.Error("pending callers not saved to disk; a crash before Postgres is back loses them", zap.Error(err))
	}
}

func writeSynced(path string, raw []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(raw); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
