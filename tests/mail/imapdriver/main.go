// Command imapdriver plays a deterministic mail workload against an IMAP
// server and dumps what an IMAP client sees, for tests/mail/run.sh (issue
// 24: a real mail server replicated by ferry).
//
//	imapdriver freeport                 a free TCP port on 127.0.0.1
//	imapdriver wait -addr A             until A greets as an IMAP server (30 s)
//	imapdriver load -addr A -users alice,bob -messages 3000 -seed 1
//	imapdriver dump -addr A -users alice,bob -o FILE
//
// The users' password comes from IMAPDRIVER_PASSWORD, never from the
// command line. load delivers with APPEND (fixed internal dates, so two
// runs with one seed build the same mail), then changes flags, expunges,
// moves messages between folders, renames folders (a folder with a child,
// so the child moves too) and delivers again into the renamed ones. dump
// writes, per user and folder, UIDVALIDITY, UIDNEXT and the message count,
// and per message its UID, flags, internal date, size and the SHA-256 of
// its body (BODY.PEEK, so dumping changes no \Seen flag), sorted.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: imapdriver freeport|wait|load|dump [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "freeport":
		err = freeport()
	case "wait":
		err = wait(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	case "dump":
		err = dump(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (want freeport, wait, load, dump)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "imapdriver:", err)
		os.Exit(1)
	}
}

func freeport() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	return nil
}

func wait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	addr := fs.String("addr", "", "IMAP server host:port")
	fs.Parse(args)
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var c *imapclient.Client
		if c, err = imapclient.DialInsecure(*addr, nil); err == nil {
			err = c.WaitGreeting()
			c.Close()
			if err == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("no IMAP server at %s after 30 s: %w", *addr, err)
}

func password() (string, error) {
	p := os.Getenv("IMAPDRIVER_PASSWORD")
	if p == "" {
		return "", errors.New("IMAPDRIVER_PASSWORD is empty: set it to the users' password")
	}
	return p, nil
}

func login(addr, user string) (*imapclient.Client, error) {
	pass, err := password()
	if err != nil {
		return nil, err
	}
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if err := c.Login(user, pass).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("login %s at %s: %w", user, addr, err)
	}
	return c, nil
}

// folders are the ones load delivers into, with their shares of the mail
// (in percent). INBOX exists from the first login.
var folders = []struct {
	name  string
	share int
}{
	{"INBOX", 40}, {"Work", 15}, {"Lists", 10}, {"Lists/golang", 15}, {"Sent", 10}, {"Archive", 10},
}

// renames are applied after the flag changes; deliveries after them go to
// the new names.
var renames = [][2]string{{"Lists", "Archive/Lists"}, {"Work", "Projects"}}

func renamed(name string) string {
	for _, r := range renames {
		if name == r[0] || strings.HasPrefix(name, r[0]+"/") {
			return r[1] + name[len(r[0]):]
		}
	}
	return name
}

func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	addr := fs.String("addr", "", "IMAP server host:port")
	users := fs.String("users", "alice,bob", "comma-separated users")
	messages := fs.Int("messages", 3000, "messages delivered before the changes")
	seed := fs.Uint64("seed", 1, "workload seed")
	fs.Parse(args)
	start := time.Now()
	var st stats
	for i, user := range strings.Split(*users, ",") {
		share := *messages / len(strings.Split(*users, ","))
		rng := rand.New(rand.NewPCG(*seed, uint64(i)))
		if err := loadUser(*addr, user, share, rng, &st); err != nil {
			return err
		}
	}
	fmt.Printf("load: %d appended (%d bytes), %d flag changes, %d expunged, %d moved, %d folders renamed, in %.1f s\n",
		st.appended, st.bytes, st.flagged, st.expunged, st.moved, st.renamed, time.Since(start).Seconds())
	return nil
}

type stats struct {
	appended, flagged, expunged, moved, renamed int
	bytes                                       int64
}

func loadUser(addr, user string, n int, rng *rand.Rand, st *stats) error {
	c, err := login(addr, user)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, f := range folders[1:] {
		if err := c.Create(f.name, nil).Wait(); err != nil {
			return fmt.Errorf("%s: create %s: %w", user, f.name, err)
		}
	}
	base := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
	deliver := func(i int, folder string, flags []imap.Flag) error {
		msg := message(rng, user, i, base.Add(time.Duration(i)*7*time.Minute))
		cmd := c.Append(folder, int64(len(msg)), &imap.AppendOptions{Flags: flags, Time: base.Add(time.Duration(i) * 7 * time.Minute)})
		if _, err := cmd.Write(msg); err != nil {
			return fmt.Errorf("%s: append to %s: %w", user, folder, err)
		}
		if err := cmd.Close(); err != nil {
			return fmt.Errorf("%s: append to %s: %w", user, folder, err)
		}
		if _, err := cmd.Wait(); err != nil {
			return fmt.Errorf("%s: append to %s: %w", user, folder, err)
		}
		st.appended++
		st.bytes += int64(len(msg))
		return nil
	}
	pick := func() string {
		r := rng.IntN(100)
		for _, f := range folders {
			if r < f.share {
				return f.name
			}
			r -= f.share
		}
		return "INBOX"
	}
	for i := range n {
		f := pick()
		var flags []imap.Flag
		if f == "Sent" {
			flags = []imap.Flag{imap.FlagSeen}
		}
		if err := deliver(i, f, flags); err != nil {
			return err
		}
	}

	// Flag changes, expunges and moves, folder by folder.
	for _, f := range folders {
		if _, err := c.Select(f.name, nil).Wait(); err != nil {
			return fmt.Errorf("%s: select %s: %w", user, f.name, err)
		}
		data, err := c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
		if err != nil {
			return fmt.Errorf("%s: search %s: %w", user, f.name, err)
		}
		var seen, flagged, answered, label, unseen, deleted, moved imap.UIDSet
		for _, uid := range data.AllUIDs() {
			r := rng.IntN(100)
			switch {
			case r < 40:
				seen.AddNum(uid)
			case r < 50:
				flagged.AddNum(uid)
			case r < 55:
				answered.AddNum(uid)
			case r < 60:
				label.AddNum(uid)
			case r < 70:
				deleted.AddNum(uid)
			case r < 78 && f.name == "INBOX":
				moved.AddNum(uid)
			}
			if r < 40 && rng.IntN(10) == 0 {
				unseen.AddNum(uid) // read, then marked unread again
			}
		}
		for _, s := range []struct {
			set  imap.UIDSet
			op   imap.StoreFlagsOp
			flag imap.Flag
		}{
			{seen, imap.StoreFlagsAdd, imap.FlagSeen},
			{flagged, imap.StoreFlagsAdd, imap.FlagFlagged},
			{answered, imap.StoreFlagsAdd, imap.FlagAnswered},
			{label, imap.StoreFlagsAdd, "$Label1"},
			{unseen, imap.StoreFlagsDel, imap.FlagSeen},
			{deleted, imap.StoreFlagsAdd, imap.FlagDeleted},
		} {
			if len(s.set) == 0 {
				continue
			}
			if err := c.Store(s.set, &imap.StoreFlags{Op: s.op, Silent: true, Flags: []imap.Flag{s.flag}}, nil).Close(); err != nil {
				return fmt.Errorf("%s: store %s in %s: %w", user, s.flag, f.name, err)
			}
			st.flagged += count(s.set)
		}
		if len(moved) > 0 {
			if _, err := c.Move(moved, "Archive").Wait(); err != nil {
				return fmt.Errorf("%s: move from %s to Archive: %w", user, f.name, err)
			}
			st.moved += count(moved)
		}
		gone, err := c.Expunge().Collect()
		if err != nil {
			return fmt.Errorf("%s: expunge %s: %w", user, f.name, err)
		}
		st.expunged += len(gone)
	}
	if err := c.Unselect().Wait(); err != nil {
		return fmt.Errorf("%s: unselect: %w", user, err)
	}

	// Folder moves, then more mail, some of it into the moved folders.
	for _, r := range renames {
		if err := c.Rename(r[0], r[1], nil).Wait(); err != nil {
			return fmt.Errorf("%s: rename %s to %s: %w", user, r[0], r[1], err)
		}
		st.renamed++
	}
	for i := n; i < n+n/10; i++ {
		f := renamed(pick())
		var flags []imap.Flag
		if rng.IntN(3) == 0 {
			flags = []imap.Flag{imap.FlagSeen}
		}
		if err := deliver(i, f, flags); err != nil {
			return err
		}
	}
	return c.Logout().Wait()
}

func count(s imap.UIDSet) int {
	n := 0
	for _, r := range s {
		n += int(r.Stop-r.Start) + 1
	}
	return n
}

var words = strings.Fields(`the a to of and in replica segment ship receive mailbox folder
	flag index cache commit fsync disk network latency batch stream checkpoint inbox archive
	meeting tomorrow please review attached report quarterly numbers budget project deadline
	release notes kernel patch thanks regards cheers question answer follow up draft final`)

// message writes a plain RFC 5322 message: headers, then Zipf-ish words,
// 300 bytes to 12 KiB.
func message(rng *rand.Rand, user string, i int, date time.Time) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: sender%d@example.org\r\nTo: %s@example.com\r\n", rng.IntN(50), user)
	fmt.Fprintf(&b, "Subject: message %d for %s\r\nDate: %s\r\n", i, user, date.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%d.%s.%x@example.org>\r\nMIME-Version: 1.0\r\n", i, user, rng.Uint64())
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n")
	size := 300 + rng.IntN(12<<10)
	col := 0
	for b.Len() < size {
		w := words[min(rng.IntN(len(words)), rng.IntN(len(words)))]
		b.WriteString(w)
		col += len(w) + 1
		if col > 70 {
			b.WriteString("\r\n")
			col = 0
		} else {
			b.WriteByte(' ')
		}
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

func dump(args []string) error {
	fs := flag.NewFlagSet("dump", flag.ExitOnError)
	addr := fs.String("addr", "", "IMAP server host:port")
	users := fs.String("users", "alice,bob", "comma-separated users")
	out := fs.String("o", "", "output file")
	fs.Parse(args)
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	var nbox, nmsg int
	for _, user := range strings.Split(*users, ",") {
		b, m, err := dumpUser(w, *addr, user)
		if err != nil {
			f.Close()
			return err
		}
		nbox += b
		nmsg += m
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Printf("dump %s: %d folders, %d messages\n", *addr, nbox, nmsg)
	return nil
}

func dumpUser(w io.Writer, addr, user string) (nbox, nmsg int, err error) {
	c, err := login(addr, user)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	list, err := c.List("", "*", nil).Collect()
	if err != nil {
		return 0, 0, fmt.Errorf("%s: list: %w", user, err)
	}
	var names []string
	for _, l := range list {
		if !slices.Contains(l.Attrs, imap.MailboxAttrNoSelect) {
			names = append(names, l.Mailbox)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		sel, err := c.Select(name, &imap.SelectOptions{ReadOnly: true}).Wait()
		if err != nil {
			return 0, 0, fmt.Errorf("%s: examine %s: %w", user, name, err)
		}
		fmt.Fprintf(w, "%s\t%s\tuidvalidity=%d uidnext=%d exists=%d\n", user, name, sel.UIDValidity, sel.UIDNext, sel.NumMessages)
		nbox++
		if sel.NumMessages == 0 {
			continue
		}
		body := &imap.FetchItemBodySection{Peek: true}
		msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{
			UID: true, Flags: true, InternalDate: true, RFC822Size: true, BodySection: []*imap.FetchItemBodySection{body},
		}).Collect()
		if err != nil {
			return 0, 0, fmt.Errorf("%s: fetch %s: %w", user, name, err)
		}
		slices.SortFunc(msgs, func(a, b *imapclient.FetchMessageBuffer) int { return int(a.UID) - int(b.UID) })
		for _, m := range msgs {
			var flags []string
			for _, fl := range m.Flags {
				if fl != "\\Recent" {
					flags = append(flags, string(fl))
				}
			}
			slices.Sort(flags)
			sum := sha256.Sum256(m.FindBodySection(body))
			fmt.Fprintf(w, "%s\t%s\tuid=%d flags=%s date=%s size=%d sha256=%s\n", user, name, m.UID,
				strings.Join(flags, ","), m.InternalDate.UTC().Format(time.RFC3339), m.RFC822Size, hex.EncodeToString(sum[:16]))
			nmsg++
		}
	}
	return nbox, nmsg, c.Logout().Wait()
}
