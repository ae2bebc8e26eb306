package lab

import (
	"os"
	"strings"
)

// LogTail returns the last n lines of host name's log.
func (l *Lab) LogTail(name string, n int) string {
	raw, err := os.ReadFile(l.Node(name).Log)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Log returns host name's whole log.
func (l *Lab) Log(name string) string {
	raw, _ := os.ReadFile(l.Node(name).Log)
	return string(raw)
}

// LogContains reports whether host name's log contains substr.
func (l *Lab) LogContains(name, substr string) bool {
	return strings.Contains(l.Log(name), substr)
}

// DumpLogs logs (t.Log) the last n lines of every host's log.
func (l *Lab) DumpLogs(n int) {
	l.mu.Lock()
	l.dumped = true
	l.mu.Unlock()
	for _, p := range l.hosts {
		l.t.Logf("---- lab %s: tail of %s (%s) ----\n%s", l.id, p.Name, p.Log, l.LogTail(p.Name, n))
	}
}
