package logging

import (
	"encoding/json"
	"fmt"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// SIPLibraryLogger names the logger of sipgo's lines (bridged from slog):
// lines that quote what strangers sent, so they keep no IP addresses and
// no stack traces.
const SIPLibraryLogger = "sipgo"

// Redacted returns l writing through RedactCore. It is idempotent: a
// logger redacted already is returned as it is.
func Redacted(l *zap.Logger) *zap.Logger {
	if _, ok := l.Core().(*redactingCore); ok {
		return l
	}
	return l.WithOptions(zap.WrapCore(RedactCore))
}

// RedactCore wraps core so that no line it writes carries a phone number in
// any spelling (ScrubPhones), whoever logged it and however: the message,
// string and byte-string fields, errors, Stringers, and the strings inside
// arrays, objects and reflected values. Typed numbers (ints, durations,
// times) are written as they are. Lines of SIPLibraryLogger lose their
// stack trace and have IPv4 addresses scrubbed too.
//
// The wrapped core is asked (Check) only once a line is written, with the
// redacted line: a sampler inside it samples what is really written.
func RedactCore(core zapcore.Core) zapcore.Core {
	if _, ok := core.(*redactingCore); ok {
		return core
	}
	return &redactingCore{next: core}
}

type redactingCore struct{ next zapcore.Core }

func (c *redactingCore) Enabled(l zapcore.Level) bool { return c.next.Enabled(l) }

func (c *redactingCore) With(fields []zapcore.Field) zapcore.Core {
	return &redactingCore{next: c.next.With(scrubFields(fields, true))}
}

func (c *redactingCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if !c.next.Enabled(e.Level) {
		return ce
	}
	return ce.AddCore(e, c)
}

func (c *redactingCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	library := isLibraryLogger(e.LoggerName)
	if library {
		e.Stack = ""
	}
	e.Message = scrub(e.Message, !library)
	if inner := c.next.Check(e, nil); inner != nil {
		inner.Write(scrubFields(fields, !library)...)
	}
	return nil
}

func (c *redactingCore) Sync() error { return c.next.Sync() }

func isLibraryLogger(name string) bool {
	return name == SIPLibraryLogger || strings.HasSuffix(name, "."+SIPLibraryLogger)
}

// scrubFields returns fields with every string they carry scrubbed.
func scrubFields(fields []zapcore.Field, keepIPv4 bool) []zapcore.Field {
	out := make([]zapcore.Field, 0, len(fields))
	for _, f := range fields {
		switch f.Type {
		case zapcore.StringType:
			f.String = scrub(f.String, keepIPv4)
		case zapcore.ByteStringType:
			b, _ := f.Interface.([]byte)
			f = zap.String(f.Key, scrub(string(b), keepIPv4))
		case zapcore.ErrorType:
			f = zap.String(f.Key, scrub(safeString(func() string { return f.Interface.(error).Error() }), keepIPv4))
		case zapcore.StringerType:
			f = zap.String(f.Key, scrub(safeString(func() string { return f.Interface.(fmt.Stringer).String() }), keepIPv4))
		case zapcore.ReflectType:
			f = zap.Any(f.Key, scrubValue(jsonValue(f.Interface), keepIPv4))
		case zapcore.ArrayMarshalerType, zapcore.ObjectMarshalerType:
			enc := zapcore.NewMapObjectEncoder()
			f.AddTo(enc)
			f = zap.Any(f.Key, scrubValue(jsonValue(enc.Fields[f.Key]), keepIPv4))
		case zapcore.InlineMarshalerType:
			enc := zapcore.NewMapObjectEncoder()
			f.AddTo(enc)
			for k, v := range enc.Fields {
				out = append(out, zap.Any(k, scrubValue(jsonValue(v), keepIPv4)))
			}
			continue
		}
		out = append(out, f)
	}
	return out
}

// safeString calls s, turning a panic (a nil pointer's Error method) into
// a placeholder rather than a crash or a stack in the log.
func safeString(s func() string) (out string) {
	defer func() {
		if recover() != nil {
			out = "<panic>"
		}
	}()
	return s()
}

// jsonValue turns v into the plain values JSON would write for it (maps,
// slices, strings, numbers), so its strings can be reached.
func jsonValue(v any) any {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	var out any
	if err := json.Unmarshal(raw, &out); err != nil {
		return string(raw)
	}
	return out
}

func scrubValue(v any, keepIPv4 bool) any {
	switch v := v.(type) {
	case string:
		return scrub(v, keepIPv4)
	case []any:
		for i := range v {
			v[i] = scrubValue(v[i], keepIPv4)
		}
	case map[string]any:
		for k := range v {
			v[k] = scrubValue(v[k], keepIPv4)
		}
	}
	return v
}
