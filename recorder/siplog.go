package recorder

import (
	"context"
	"log/slog"
	"regexp"

	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"
)

// sipgo logs through slog, and on a parse error it quotes the raw message,
// which from another SRC may hold a phone number in its metadata. The
// recorder passes on only warnings and errors, with every attribute
// dropped and long digit runs masked in the message.

var phoneLike = regexp.MustCompile(`\d{7,}`)

func sipLogger(logger *zap.Logger) *slog.Logger {
	return slog.New(scrubbingHandler{next: zapslog.NewHandler(logger.Core(), zapslog.WithName("sipgo"))})
}

type scrubbingHandler struct{ next slog.Handler }

func (h scrubbingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.next.Enabled(ctx, l)
}

func (h scrubbingHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.next.Handle(ctx, slog.NewRecord(r.Time, r.Level, phoneLike.ReplaceAllString(r.Message, "[digits]"), r.PC))
}

func (h scrubbingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h scrubbingHandler) WithGroup(string) slog.Handler      { return h }
