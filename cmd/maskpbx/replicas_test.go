package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/pbx"
	"github.com/maskpbx/maskpbx/recorder"
)

// TestNATSReplicas: on a three-server NATS cluster a node started with
// --nats-replicas 3 replicates the call events, registrations, cluster
// state and import reports on all three; a node started after it with the
// default keeps them so; with a server gone, events and cluster state are
// still written and read.
func TestNATSReplicas(t *testing.T) {
	members, users, natsURLs := testenv.NATSCluster(t)
	urls := strings.Split(natsURLs, ",")
	node := func(name string, replicas int) *system {
		cfg := systemConfig(t)
		cfg.NodeID = name
		cfg.NATSURL, cfg.NATS = strings.Join(urls, ","), natsClient{User: bus.UserPBX, Password: users.PBX, Replicas: replicas}
		return startSystemFrom(t, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	}
	node("node-a", 3)
	node("node-b", 1)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, js, err := bus.Connect(ctx, strings.Join(urls[1:], ","), "replicas-test", bus.Auth{User: bus.UserPBX, Password: users.PBX})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, name := range replicatedStreams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s has %d replicas after node B started, want 3", name, r)
		}
	}

	// The servers' JetStream leaders may be on the one that goes: the
	// other two elect new ones and go on.
	members[0].Shutdown()
	callID := "5d6c1a1e-7f0e-4b8e-9f3e-0a1b2c3d4e5f"
	publisher := events.NewPublisher(js, zap.NewNop())
	testenv.Eventually(t, 30*time.Second, func() bool {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return publisher.Publish(pctx, events.Event{Kind: events.RecordingReady, CallID: callID,
			Direction: events.Inbound, Recording: "complete"}) == nil
	}, "an event stored with one NATS server of three gone")
	testenv.Eventually(t, 10*time.Second, func() bool {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		stream, err := js.Stream(pctx, events.StreamName)
		if err != nil {
			return false
		}
		_, err = stream.GetLastMsgForSubject(pctx, "calls."+callID+".recording.ready")
		return err == nil
	}, "the event read back")
	kv, err := pbx.OpenCluster(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := kv.Put(pctx, "replicas-test", []byte("written")); err != nil {
			return false
		}
		e, err := kv.Get(pctx, "replicas-test")
		return err == nil && string(e.Value()) == "written"
	}, "cluster state written and read with a server gone")
}

// TestNodesStartTogether: three nodes starting at the same moment on a
// fresh three-server cluster each open every stream and bucket serve opens,
// with three replicas: all get them (a request about a stream another node
// is just creating can go unanswered; it is asked again).
func TestNodesStartTogether(t *testing.T) {
	members, users, _ := testenv.NATSCluster(t)
	var wg sync.WaitGroup
	errs := make([]error, len(members))
	for i, m := range members {
		nc, js, err := bus.Connect(context.Background(), m.URL(), fmt.Sprint("node-", i), bus.Auth{User: bus.UserPBX, Password: users.PBX})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			regs, err := pbx.NewRegistrations(ctx, js, 3, zap.NewNop())
			if err != nil {
				errs[i] = err
				return
			}
			defer regs.Stop()
			_, err = events.EnsureStream(ctx, js, 3)
			if err == nil {
				_, err = pbx.OpenCluster(ctx, js, 3)
			}
			if err == nil {
				_, err = openImportReports(ctx, js, 3)
			}
			if err == nil {
				_, err = recorder.OpenLeases(ctx, js, 3)
			}
			if err == nil {
				_, err = recorder.OpenObjectBlobs(ctx, js, recorder.RecordingsBucket, 3, t.TempDir(), zap.NewNop())
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("node %d: %v", i, err)
		}
	}
}
