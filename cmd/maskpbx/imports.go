package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/maskpbx/maskpbx/console"
)

// importsBucket is the JetStream KV bucket of CSV import reports, so that
// an import's page shows on every node. A report lasts importsKeep after
// its last change.
const (
	importsBucket = "IMPORTS"
	importsKeep   = 2 * time.Hour
	// importPart bounds one value: a NATS message is at most 1 MiB by
	// default, and a finished report of 10000 rows is more.
	importPart = 512 << 10
)

// importReports keeps reports in the IMPORTS bucket: each save writes the
// report's parts under "<id>.<save>.<n>", then "<save>.<parts>" under
// "<id>", so a reader never mixes two saves' parts. Earlier saves' parts
// expire with the bucket's TTL.
type importReports struct{ kv jetstream.KeyValue }

var _ console.ImportReports = importReports{}

func openImportReports(ctx context.Context, js jetstream.JetStream, replicas int) (importReports, error) {
	kv, err := js.KeyValue(ctx, importsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: importsBucket,
			Description: "maskpbx: CSV import reports", History: 1, TTL: importsKeep, Replicas: max(replicas, 1)})
	}
	if err != nil {
		return importReports{}, fmt.Errorf("open %s bucket: %w", importsBucket, err)
	}
	return importReports{kv: kv}, nil
}

func (r importReports) Save(ctx context.Context, id string, report []byte) error {
	save := strconv.FormatInt(time.Now().UnixNano(), 10)
	parts := 0
	for rest := report; len(rest) > 0 || parts == 0; parts++ {
		part := rest[:min(len(rest), importPart)]
		rest = rest[len(part):]
		if _, err := r.kv.Put(ctx, id+"."+save+"."+strconv.Itoa(parts), part); err != nil {
			return err
		}
	}
	_, err := r.kv.Put(ctx, id, []byte(save+"."+strconv.Itoa(parts)))
	return err
}

func (r importReports) Load(ctx context.Context, id string) ([]byte, error) {
	e, err := r.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, console.ErrNoImport
	}
	if err != nil {
		return nil, err
	}
	save, count, _ := strings.Cut(string(e.Value()), ".")
	parts, err := strconv.Atoi(count)
	if err != nil || parts < 1 || parts > 64 {
		return nil, fmt.Errorf("import %s: %q parts", id, e.Value())
	}
	var report bytes.Buffer
	for n := range parts {
		part, err := r.kv.Get(ctx, id+"."+save+"."+strconv.Itoa(n))
		if err != nil {
			return nil, fmt.Errorf("import %s part %d: %w", id, n, err)
		}
		report.Write(part.Value())
	}
	return report.Bytes(), nil
}
