// Command maskpbx is the one binary of maskpbx: `serve` runs every component
// in one process; `migrate` brings the database schema up to date.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/maskpbx/maskpbx/internal/logging"
	"github.com/maskpbx/maskpbx/storage"
)

const usage = `usage: maskpbx <command> [flags]

commands:
  serve     run the PBX, registrar, API and embedded NATS in one process
  recorder  run the SIPREC recording server (and CDR writer) on its own
  migrate   apply the embedded database migrations and exit

Run "maskpbx <command> -h" for the flags of a command. Every flag can also be
set as MASKPBX_<FLAG> in the environment (e.g. MASKPBX_DATABASE_URL).
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "serve":
		err = serveCommand(ctx, os.Args[2:])
	case "recorder":
		err = recorderCommand(ctx, os.Args[2:])
	case "migrate":
		err = migrateCommand(ctx, os.Args[2:])
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "maskpbx: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "maskpbx %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func serveCommand(ctx context.Context, args []string) error {
	cfg, err := parseConfig("serve", args)
	if err != nil {
		return err
	}
	logger, err := logging.New(cfg.LogFormat)
	if err != nil {
		return err
	}
	defer logger.Sync() //nolint:errcheck // nothing useful to do on exit
	return serve(ctx, cfg, logger, nil)
}

func migrateCommand(ctx context.Context, args []string) error {
	cfg, err := parseConfig("migrate", args)
	if err != nil {
		return err
	}
	applied, err := storage.Migrate(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	fmt.Printf("applied %d migration(s) %v\n", len(applied), applied)
	return nil
}
