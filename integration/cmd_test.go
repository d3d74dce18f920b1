package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

var built struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// buildProxy builds cmd/eosproxy once per test binary run.
func buildProxy(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "eosproxy-bin"); built.err != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", built.dir, "../cmd/eosproxy").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("build eosproxy: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return filepath.Join(built.dir, "eosproxy")
}

type runningProxy struct {
	cmd       *exec.Cmd
	bootstrap string
	logs      chan map[string]any
}

// runProxy starts the eosproxy binary and waits for its "ready" log line.
func runProxy(t *testing.T, bin string, args ...string) *runningProxy {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--log-format", "json", "--listen", "127.0.0.1:0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	rp := &runningProxy{cmd: cmd, logs: make(chan map[string]any, 1000)}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if line["message"] == "eosproxy ready" {
				ready <- line["bootstrap"].(string)
			}
			select {
			case rp.logs <- line:
			default:
			}
		}
		close(rp.logs)
	}()
	select {
	case rp.bootstrap = <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("eosproxy did not log ready")
	}
	return rp
}

// stop sends SIGTERM and returns the exit code.
func (rp *runningProxy) stop(t *testing.T) int {
	t.Helper()
	rp.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- rp.cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		t.Fatal("eosproxy did not exit on SIGTERM")
		return -1
	}
}

// The one-command default: no --upstream serves from the embedded backend,
// which keeps its data, and eosproxy its broker ports, across a restart.
func TestEmbeddedDefaultSurvivesRestart(t *testing.T) {
	bin := buildProxy(t)
	dir := t.TempDir()
	rp := runProxy(t, bin, "--data-dir", dir)
	cl := newClient(t, rp.bootstrap, kgo.AllowAutoTopicCreation(), kgo.DefaultProduceTopic("orders"))
	produceN(t, cl, "orders", 0, 100)
	meta, err := kadm.NewClient(cl).Metadata(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	cl.Close()
	if code := rp.stop(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "embedded-kafka")); err != nil {
		t.Fatalf("embedded backend data not under the data dir: %v", err)
	}

	rp = runProxy(t, bin, "--data-dir", dir)
	for _, br := range meta.Brokers {
		cl := newClient(t, br.Host+":"+itoa(br.Port))
		if err := cl.Ping(testCtx(t)); err != nil {
			t.Fatalf("broker %d's port %d not back after restart: %v", br.NodeID, br.Port, err)
		}
	}
	cons := newClient(t, rp.bootstrap, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	checkAllOnceInOrder(t, consumeAll(t, cons, 100), 100)
	if code := rp.stop(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

func TestBadConfigExitsWithClearError(t *testing.T) {
	bin := buildProxy(t)
	for _, args := range [][]string{
		{"--log-level", "loud"},
		{"--broker-ports", "9-1"},
		{"--config", "/nonexistent.yaml"},
	} {
		cmd := exec.Command(bin, args...)
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() == 0 || len(out) == 0 {
			t.Fatalf("%v: want non-zero exit and a message, got %v %q", args, err, out)
		}
	}
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
