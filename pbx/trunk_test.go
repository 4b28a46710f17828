package pbx

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// startDNS answers SRV and A questions from its tables over UDP, and
// NXDOMAIN to anything else; it returns a resolver that asks only it.
func startDNS(t *testing.T, srv map[string][]dnsmessage.SRVResource, a map[string][4]byte) *net.Resolver {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			name := strings.ToLower(q.Name.String())
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
			b.EnableCompression()
			_ = b.StartQuestions()
			_ = b.Question(q)
			_ = b.StartAnswers()
			rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
			answered := false
			switch q.Type {
			case dnsmessage.TypeSRV:
				for _, r := range srv[name] {
					_ = b.SRVResource(rh, r)
					answered = true
				}
			case dnsmessage.TypeA:
				if ip, ok := a[name]; ok {
					_ = b.AResource(rh, dnsmessage.AResource{A: ip})
					answered = true
				}
			}
			msg, _ := b.Finish()
			if !answered {
				// NXDOMAIN: rebuild the header with the error code.
				b = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RCode: dnsmessage.RCodeNameError})
				_ = b.StartQuestions()
				_ = b.Question(q)
				msg, _ = b.Finish()
			}
			_, _ = conn.WriteTo(msg, from)
		}
	}()
	addr := conn.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

func srvTo(target string, prio uint16, addr string) dnsmessage.SRVResource {
	_, port, _ := net.SplitHostPort(addr)
	var p uint16
	for _, c := range port {
		p = p*10 + uint16(c-'0')
	}
	return dnsmessage.SRVResource{Priority: prio, Weight: 10, Port: p, Target: dnsmessage.MustNewName(target)}
}

// --trunk names the provider; DNS SRV gives two servers. Calls out go to
// the preferred one while it answers OPTIONS, to the other once it stops,
// and the Request-URI names the provider, not a server.
func TestTrunkSRVFailover(t *testing.T) {
	const number = "+79161110077"
	var silent atomic.Bool
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	first := startTrunkUASOn(t, trunkHost, map[string]int{number: 486}, func(r *sip.Request) {
		if r.Method == sip.OPTIONS && silent.Load() {
			<-hold // a server that stopped answering
		}
	})
	second := startTrunkUASOn(t, "127.0.0.5", map[string]int{number: 486}, nil)
	resolver := startDNS(t, map[string][]dnsmessage.SRVResource{
		"_sip._udp.provider.test.": {srvTo("sip2.provider.test.", 20, second.addr), srvTo("sip1.provider.test.", 10, first.addr)},
	}, map[string][4]byte{"sip1.provider.test.": {127, 0, 0, 4}, "sip2.provider.test.": {127, 0, 0, 5}})

	env := startCallEnv(t, func(c *CallConfig) {
		c.Trunk, c.Resolver, c.TrunkPing = "provider.test", resolver, 200*time.Millisecond
		c.failurePause = time.Millisecond
	})
	targets := env.srv.TrunkTargets()
	if len(targets) != 2 || targets[0].Addr != first.addr || targets[1].Addr != second.addr || targets[0].Transport != "UDP" {
		t.Fatalf("trunk targets %+v, want %s then %s over UDP", targets, first.addr, second.addr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	client, err := env.store.CreateClient(ctx, storage.NewClient{Name: "Acme", ManagerID: env.manager.ID,
		Phones:  []masking.SealedPhone{sealPhone(t, env.keys, number)},
		NewCode: func() (string, error) { c, err := masking.NewClientCode(); return string(c), err }}, "test")
	if err != nil {
		t.Fatal(err)
	}
	call := func(id string) {
		t.Helper()
		if err := env.srv.Originate(ctx, Originate{CallID: id, ManagerID: env.manager.ID, ClientID: client.ID}); err != nil {
			t.Fatalf("Originate: %v", err)
		}
		testenv.Eventually(t, 15*time.Second, func() bool { st, _ := env.srv.CallStatus(id); return st.State == StateEnded },
			"call %s to end (the provider is busy)", id)
	}

	call("c-1")
	if got := first.numbers(); len(got) != 1 || len(second.numbers()) != 0 {
		t.Fatalf("the preferred server got %v and the other %v; want the preferred one only", got, second.numbers())
	}
	first.mu.Lock()
	hosts := first.hosts
	first.mu.Unlock()
	if len(hosts) != 1 || hosts[0] != "provider.test" {
		t.Errorf("Request-URI hosts %v, want the provider's name", hosts)
	}

	silent.Store(true)
	testenv.Eventually(t, 5*time.Second, func() bool { return !env.srv.TrunkTargets()[0].Up },
		"the preferred server marked down once it stops answering OPTIONS")
	call("c-2")
	if got := second.numbers(); len(got) != 1 || len(first.numbers()) != 1 {
		t.Fatalf("after failover the other server got %v and the silent one %v", got, first.numbers())
	}
	if !env.srv.TrunkTargets()[1].Up {
		t.Error("the server that answers is marked down")
	}
}

func TestParseTrunk(t *testing.T) {
	for _, tc := range []struct {
		spec      string
		host      string
		port      int
		transport string
		ok        bool
	}{
		{"192.0.2.10:5060", "192.0.2.10", 5060, "", true},
		{"192.0.2.10", "192.0.2.10", 0, "", true},
		{"sip.provider.example", "sip.provider.example", 0, "", true},
		{"sip.provider.example;transport=tls", "sip.provider.example", 0, "TLS", true},
		{"sip.provider.example:5080;transport=TCP", "sip.provider.example", 5080, "TCP", true},
		{"sip.provider.example;transport=sctp", "", 0, "", false},
		{"sip.provider.example;lr", "", 0, "", false},
		{"192.0.2.10:0", "", 0, "", false},
		{"192.0.2.10:99999", "", 0, "", false},
		{"user@host", "", 0, "", false},
		{"", "", 0, "", false},
	} {
		host, port, transport, err := parseTrunk(tc.spec)
		if (err == nil) != tc.ok || host != tc.host || port != tc.port || transport != tc.transport {
			t.Errorf("parseTrunk(%q) = %q %d %q %v", tc.spec, host, port, transport, err)
		}
	}
}
