package logging

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New builds the process logger: "json" for production, "console" for a
// terminal (make run).
func New(format string) (*zap.Logger, error) {
	var zc zap.Config
	if format == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
		zc.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
	} else {
		zc = zap.NewProductionConfig()
	}
	// Stack traces only for panics: an overloaded PBX refusing calls at
	// error level must not also pay for a trace per refusal.
	return zc.Build(zap.AddStacktrace(zapcore.DPanicLevel))
}
