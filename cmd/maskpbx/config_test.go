package main

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/masking"
)

func TestParsePrefixes(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []netip.Prefix
		bad      bool
	}{
		{"empty", "", nil, false},
		{"blanks and commas", " , ,", nil, false},
		{"one IP is a host prefix", "192.0.2.7", []netip.Prefix{netip.MustParsePrefix("192.0.2.7/32")}, false},
		{"IPv6 host", "2001:db8::1", []netip.Prefix{netip.MustParsePrefix("2001:db8::1/128")}, false},
		{"CIDR masked", "198.51.100.77/24, 10.0.0.1", []netip.Prefix{
			netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("10.0.0.1/32")}, false},
		{"host name refused", "trunk.example.com", nil, true},
		{"bad CIDR refused", "192.0.2.0/33", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePrefixes(tc.in)
			if (err != nil) != tc.bad {
				t.Fatalf("parsePrefixes(%q) err = %v, want error %v", tc.in, err, tc.bad)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parsePrefixes(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// Profiles have no credentials: --pprof-listen takes loopback addresses only,
// so nobody on the network can reach them.
func TestPprofListenLoopbackOnly(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:6060": true, "127.0.0.30:16060": true, "[::1]:6060": true, "localhost:6060": true,
		"0.0.0.0:6060": false, ":6060": false, "[::]:6060": false, "10.0.0.5:6060": false,
		"pbx.example.com:6060": false, "127.0.0.1": false,
	} {
		if err := loopbackOnly(addr); (err == nil) != ok {
			t.Errorf("loopbackOnly(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
}

func TestTrunkRegisterFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{"600": 600 * time.Second, "600s": 600 * time.Second, "10m": 10 * time.Minute, "0": 0} {
		c, err := parseConfig("serve", []string{"--database-url", "postgres://x", "--trunk-register", in})
		if err != nil || c.TrunkRegister != want {
			t.Errorf("--trunk-register %s: %v, %v; want %v", in, c.TrunkRegister, err, want)
		}
	}
	if _, err := parseConfig("serve", []string{"--database-url", "postgres://x", "--trunk-register", "soon"}); err == nil {
		t.Error("--trunk-register soon accepted")
	}
	t.Setenv("MASKPBX_TRUNK_PASSWORD", "from-env")
	if c, err := parseConfig("serve", []string{"--database-url", "postgres://x"}); err != nil || c.TrunkPassword != "from-env" {
		t.Errorf("MASKPBX_TRUNK_PASSWORD: %q, %v", c.TrunkPassword, err)
	}
}

func TestAliasNumbersFlag(t *testing.T) {
	numbers := masking.NewNormalizer("RU")
	got, err := parseAliasNumbers(" +74950000100, 84950000198-+74950000200 ,", numbers)
	want := []string{"+74950000100", "+74950000198", "+74950000199", "+74950000200"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("parseAliasNumbers = %v %v, want %v", got, err, want)
	}
	if got, err := parseAliasNumbers("", numbers); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	for _, bad := range []string{
		"+7495000010x",                           // not a number
		"+74950000199-+74950000100",              // reversed
		"+74950000100-+7495000010",               // lengths differ
		"+74950000100,+74950000100",              // twice
		"+74950000100-+74950000150,+74950000120", // twice, by a range
		"+74950000000-+74959999999",              // too many
	} {
		if _, err := parseAliasNumbers(bad, numbers); err == nil {
			t.Errorf("parseAliasNumbers(%q) took it", bad)
		}
	}
	if cfg, err := parseConfig("serve", []string{"--database-url", "postgres://x"}); err != nil || cfg.AliasQuarantine != 2160*time.Hour {
		t.Errorf("--alias-quarantine default %v (%v), want 90 days", cfg.AliasQuarantine, err)
	}
}

// --alert-quiet-window takes days or a Go duration; the defaults of the
// alert flags are the documented ones.
func TestAlertFlags(t *testing.T) {
	c, err := parseConfig("serve", []string{"--database-url", "postgres://x@localhost/db", "--alert-quiet-window", "45d"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Alerts.th.QuietWindow != 45*24*time.Hour || c.Alerts.th.QuietMinCalls != 4 || c.Alerts.th.QuietFactor != 3 ||
		c.Alerts.th.BurstCount != 20 || c.Alerts.th.BurstWindow != 10*time.Minute || c.Alerts.hooks.Tries != 5 {
		t.Fatalf("alert flags %+v", c.Alerts)
	}
	if _, err := parseConfig("serve", []string{"--database-url", "postgres://x@localhost/db", "--alert-quiet-window", "60days"}); err == nil {
		t.Fatal("--alert-quiet-window 60days was taken")
	}
}
