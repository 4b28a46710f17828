// Package logging builds maskpbx's zap logger and owns the one log field
// that may carry a phone number, Phone, which writes it redacted. Library
// logs that go through slog (sipgo's) are bridged into it by pbx, which also
// redacts them. It knows nothing of calls or storage.
package logging
