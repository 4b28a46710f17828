package events

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/testenv"
)

// Three nodes starting at once on a fresh three-server cluster each ensure
// the CALLS stream with three replicas: all get it, at once, and it takes
// events (systemd starts every node of a company together).
func TestEnsureStreamConcurrentStart(t *testing.T) {
	members, users, _ := testenv.NATSCluster(t)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	took := make([]time.Duration, 3)
	for i, m := range members {
		js := connect(t, testenv.WithCredentials(m.URL(), bus.UserPBX, users.PBX))
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			start := time.Now()
			_, errs[i] = EnsureStream(ctx, js, 3)
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	for i, err := range errs {
		t.Logf("node %d: %v in %v", i, err, took[i])
		if err != nil {
			t.Errorf("node %d: %v", i, err)
		}
	}
	js := connect(t, testenv.WithCredentials(members[1].URL(), bus.UserPBX, users.PBX))
	testenv.Eventually(t, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.Publish(ctx, fmt.Sprintf("calls.%s.ended", newUUID()), []byte(`{}`))
		return err == nil
	}, "an event stored after the concurrent start")
}
