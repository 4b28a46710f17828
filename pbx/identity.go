package pbx

import (
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/maskpbx/maskpbx/masking"
)

// Who a call in is from and which company number it was for, as the trunk
// tells it. Providers assert the caller's identity (RFC 3325
// P-Asserted-Identity, or the older Remote-Party-ID) and put "anonymous" in
// From when the caller withholds his number from other parties; a call the
// provider forwarded names the number first dialled in Diversion (RFC 5806)
// or History-Info (RFC 7044). Only a trusted source may assert anything:
// from anyone else these headers are ignored. None of them is ever copied
// to the manager's leg, which is built from an allow-list.

// CompanyNumber is one public number of the company and the team its calls
// ring when the caller is nobody's client yet ("" = every manager).
type CompanyNumber struct {
	Number string // E.164
	Team   string
}

// callerNumber is the caller's number in E.164 as the trunk asserts it:
// the first of P-Asserted-Identity, Remote-Party-ID (party=calling) and From
// that reads as a number. Privacy: id hides it from other parties, not from
// us: the client still reaches his manager, who still sees only his code.
// Untrusted sources only have From. "" means no usable number (anonymous).
func callerNumber(req *sip.Request, trusted bool, numbers masking.Normalizer) string {
	var candidates []string
	if trusted {
		for _, a := range headerAddresses(req, "P-Asserted-Identity") {
			candidates = append(candidates, a.user)
		}
		for _, a := range headerAddresses(req, "Remote-Party-ID") {
			if party, ok := a.params.Get("party"); !ok || strings.EqualFold(party, "calling") {
				candidates = append(candidates, a.user)
			}
		}
	}
	if from := req.From(); from != nil {
		candidates = append(candidates, from.Address.User)
	}
	for _, raw := range candidates {
		if e164, err := numbers.Normalize(raw); err == nil {
			return e164
		}
	}
	return ""
}

// calledNumber finds which company number a call in from the trunk is for:
// the Request-URI, else the number first dialled before the provider
// forwarded the call (the oldest Diversion, the first History-Info entry,
// then the others), else To. ok is false when none is a company number.
func calledNumber(req *sip.Request, numbers masking.Normalizer, companies []CompanyNumber) (CompanyNumber, bool) {
	candidates := []string{req.Recipient.User}
	diversions := headerAddresses(req, "Diversion")
	// Each diverting server adds its Diversion on top: the last is the
	// number the caller dialled.
	for i := len(diversions) - 1; i >= 0; i-- {
		candidates = append(candidates, diversions[i].user)
	}
	for _, a := range historyInfo(req) {
		candidates = append(candidates, a.user)
	}
	if to := req.To(); to != nil {
		candidates = append(candidates, to.Address.User)
	}
	for _, raw := range candidates {
		e164, err := numbers.Normalize(raw)
		if err != nil {
			continue
		}
		for _, c := range companies {
			if c.Number == e164 {
				return c, true
			}
		}
	}
	return CompanyNumber{}, false
}

// headerAddress is one name-addr of a header list: the user part of its URI
// (a tel: URI's number) and the header's parameters.
type headerAddress struct {
	user   string
	params sip.HeaderParams
}

// maxIdentityValues bounds how many addresses of one header are read: no
// real call has more, and a bound keeps hostile input cheap.
const maxIdentityValues = 10

// headerAddresses parses every address in the headers called name;
// values that don't parse are skipped.
func headerAddresses(req *sip.Request, name string) []headerAddress {
	var out []headerAddress
	for _, h := range req.GetHeaders(name) {
		for _, v := range splitHeaderList(h.Value()) {
			if len(out) == maxIdentityValues {
				return out
			}
			v = strings.TrimSpace(v)
			if v == "" {
				continue
			}
			var uri sip.Uri
			params := sip.NewParams()
			if _, err := sip.ParseAddressValue(v, &uri, &params); err != nil {
				continue
			}
			out = append(out, headerAddress{user: uriNumber(uri), params: params})
		}
	}
	return out
}

// uriNumber is the user part of a sip: URI or the number of a tel: URI.
func uriNumber(uri sip.Uri) string {
	switch uri.Scheme {
	case "sip", "sips":
		return uri.User
	case "tel":
		n, _, _ := strings.Cut(uri.Raw(), ";")
		return n
	}
	return ""
}

// historyInfo is the entries of History-Info in index order (the first is
// the Request-URI the caller's INVITE began with); entries without an
// index keep the order they came in.
func historyInfo(req *sip.Request) []headerAddress {
	entries := headerAddresses(req, "History-Info")
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i], _ = e.params.Get("index")
	}
	// Insertion sort: a handful of entries, stable.
	for i := 1; i < len(entries); i++ {
		for j := i; j > 0 && indexLess(keys[j], keys[j-1]); j-- {
			entries[j], entries[j-1] = entries[j-1], entries[j]
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return entries
}

// indexLess orders History-Info indexes ("1", "1.1", "1.1.2") as the tree
// they number, depth first; an entry without an index sorts last.
func indexLess(a, b string) bool {
	if a == "" || b == "" {
		return a != "" && b == ""
	}
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, errX := strconv.Atoi(as[i])
		y, errY := strconv.Atoi(bs[i])
		if errX != nil || errY != nil {
			return false
		}
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}
