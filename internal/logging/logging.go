package logging

import (
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"
)

// New builds the process logger, writing to stderr through RedactCore: "json" for production,
// "console" for people (make run). The console format colours levels only
// when stderr is a terminal and NO_COLOR is unset, so a log redirected to a
// file or a pipe holds no escape codes.
func New(format string) (*zap.Logger, error) {
	var zc zap.Config
	if format == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
		if colourful(os.Stderr) {
			zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
		}
		zc.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
	} else {
		zc = zap.NewProductionConfig()
	}
	// Stack traces only for panics: an overloaded PBX refusing calls at
	// error level must not also pay for a trace per refusal.
	l, err := zc.Build(zap.AddStacktrace(zapcore.DPanicLevel))
	if err != nil {
		return nil, err
	}
	return Redacted(l), nil
}

// colourful reports whether f is a terminal that may get colour codes
// (https://no-color.org: NO_COLOR set to anything turns them off).
func colourful(f *os.File) bool {
	if os.Getenv("NO_COLOR") != "" {
		return false
	}
	return term.IsTerminal(int(f.Fd()))
}
