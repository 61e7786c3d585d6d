package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/crypt"
	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/rekey"
)

const rekeyExamples = `  # re-wrap every segment's file key for the [encryption] recipients of
  # the config, opening the segments with its identity_file
  ferry rekey --config /etc/ferry/rekey.toml

  # retire key A for key B: open with A (or a newer key), wrap for B only
  FERRY_AGE_IDENTITY_FILE=/root/a.key ferry rekey --store s3://dr-bucket/ferry --stream app \
      --recipient age1...B
`

func runRekey(args []string, stdout, stderr io.Writer) error {
	c := newFlags("rekey", "ferry rekey --store URL --stream NAME [--recipient age1...]... [--recipients-file FILE] [--identity FILE] [--config FILE]", rekeyExamples, stderr)
	c.accept("max-segment-bytes")
	recipients := c.fs.StringArray("recipient", nil, "a new recipient `age1...` (repeatable); with --recipients-file, replaces [encryption] recipients and recipients_file")
	recipientsFile := c.fs.String("recipients-file", "", "a `file` of new recipients, one age1... a line")
	identity := c.fs.String("identity", "", "the age identity `file` that opens the segments (default: [encryption] identity_file, or "+config.IdentityEnv+")")
	if err := c.parseNoArgs(args, ""); err != nil {
		return err
	}
	cfg := c.cfg
	if err := needStreamStore(cfg, "rekey works on an archive store (a directory or s3://), not on a tcp:// link: rekey the receiver's inbox directory instead"); err != nil {
		return err
	}
	if len(*recipients) > 0 || *recipientsFile != "" {
		cfg.Encryption.Recipients, cfg.Encryption.RecipientsFile = *recipients, *recipientsFile
	}
	if !cfg.Encryption.Encrypts() {
		return usageError{errors.New("no new recipients: give --recipient or --recipients-file, or [encryption] recipients in the config")}
	}
	enc, err := crypt.LoadRecipients(cfg.Encryption.Recipients, cfg.Encryption.RecipientsFile)
	if err != nil {
		return usageError{err}
	}
	if *identity != "" {
		cfg.Encryption.IdentityFile = *identity
	}
	kr, err := keyringFor(cfg)
	if err != nil {
		return err
	}
	if kr == nil {
		return usageError{fmt.Errorf("no identity to open the segments: give --identity, [encryption] identity_file or %s", config.IdentityEnv)}
	}
	log := c.logger(stderr)
	ctx, stop := signalContext(context.Background(), log)
	defer stop()
	st, err := openExistingStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	rep, err := rekey.Run(ctx, rekey.Config{Store: st, Stream: cfg.Stream, Keyring: kr, Recipients: enc,
		MaxSegmentBytes: c.segmentLimit()}, log)
	if err != nil {
		if rep.Epoch != 0 {
			err = fmt.Errorf("%w\n(key epoch %d: %d segments rekeyed by this run before it stopped; run rekey again to resume)", err, rep.Epoch, rep.Rekeyed)
		}
		return fmt.Errorf("rekey %s in %s: %w", cfg.Stream, st, err)
	}
	how := "new"
	if rep.Resumed {
		how = "resumed"
	}
	fmt.Fprintf(stdout, "rekeyed %s: key epoch %d (%s, %s) for key %s\n", cfg.Stream, rep.Epoch, how,
		batch.KeyEpochKey(cfg.Stream, rep.Epoch), strings.Join(enc.Recipients(), ", "))
	fmt.Fprintf(stdout, "%d segments: %d rekeyed now, %d already in this epoch, %d plaintext (left as they are)\n",
		rep.Segments, rep.Rekeyed, rep.Done, rep.Plaintext)
	fmt.Fprintf(stdout, "every encrypted segment now has a header in epoch %d; readers use it. The headers embedded in the segments still open with the old keys (docs/FORMAT.md, \"Rotation\")\n", rep.Epoch)
	return nil
}
