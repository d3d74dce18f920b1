package main

import (
	"flag"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// The README's configuration table is rendered from the flag definitions so
// that the two cannot drift; TestConfigReference fails when they differ.
//go:generate go test -run TestConfigReference -update

// Markers around the generated table in README.md.
const (
	configRefBegin = "<!-- flags:begin -->"
	configRefEnd   = "<!-- flags:end -->"
)

// renderConfigReference renders one Markdown table row per flag of fs, in
// name order: flag and its argument, environment form, default, meaning.
func renderConfigReference(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString("| flag | environment | default | meaning |\n|---|---|---|---|\n")
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		def := refDefault(f)
		// A default that is not a value is the usage's last words.
		if i := strings.LastIndex(usage, " (default: "); def == "" && i >= 0 && strings.HasSuffix(usage, ")") {
			usage, def = usage[:i], refCode(usage[i+len(" (default: "):len(usage)-1])
		}
		name := "--" + f.Name
		if arg != "" {
			name += " " + arg
		}
		fmt.Fprintf(&b, "| `%s` | `%s` | %s | %s |\n", name, envName(f.Name), refCell(def), refCell(refCode(usage)))
	})
	return b.String()
}

// refDefault is f's default as a table cell: durations without trailing
// zero units, byte counts with their size in MiB or GiB; empty if none.
func refDefault(f *flag.Flag) string {
	if f.DefValue == "" {
		return ""
	}
	g, _ := f.Value.(flag.Getter)
	if d, ok := g.Get().(time.Duration); ok {
		s := d.String() // 24h0m0s
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		return "`" + s + "`"
	}
	if n, ok := g.Get().(int64); ok && strings.HasSuffix(f.Name, "-bytes") {
		return fmt.Sprintf("`%d` (%s)", n, refSize(n))
	}
	if n, ok := g.Get().(int); ok && strings.HasSuffix(f.Name, "-bytes") {
		return fmt.Sprintf("`%d` (%s)", n, refSize(int64(n)))
	}
	return "`" + f.DefValue + "`"
}

// refSize is n bytes in the largest binary unit that divides it.
func refSize(n int64) string {
	for _, u := range []struct {
		name  string
		shift uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d %s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// refCodeRE finds what the table shows as code: paths, endpoints, flags,
// names with underscores (error codes, environment variables, topics) and
// Kafka's dotted setting names.
var refCodeRE = regexp.MustCompile(`\b[a-z][a-z.-]*/([a-z.-]+/?)*|/[a-z][a-z/]*[a-z]|--[a-z]([a-z-]*[a-z])?(-\*)?|\b[A-Za-z0-9]*_[A-Za-z0-9_]*\b|\b[a-z]+\.[a-z]+\.[a-z.]*[a-z]\b`)

func refCode(s string) string {
	return refCodeRE.ReplaceAllString(s, "`$0`")
}

// refCell keeps a table cell in its column.
func refCell(s string) string {
	return strings.ReplaceAll(s, "|", `\|`)
}
