package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
)

// serveKfakeEnv, set to a broker count, makes eosbench serve a kfake
// cluster instead: the backend as its own process (--kfake-process), as a
// broker always is. In the benchmark's own process the direct path would
// skip a process wake-up at each end of every round trip (client and broker
// goroutines hand over inside one Go scheduler), which no deployment has,
// and the hop through eosproxy would look that much dearer.
const serveKfakeEnv = "EOSBENCH_SERVE_KFAKE"

// serveKfake runs the cluster, prints its addresses on one line, and stops
// when stdin closes (the parent exited or is done).
func serveKfake(brokers string) error {
	n, err := strconv.Atoi(brokers)
	if err != nil || n < 1 {
		return fmt.Errorf("%s=%q: want a broker count", serveKfakeEnv, brokers)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(n))
	if err != nil {
		return fmt.Errorf("start kfake: %w", err)
	}
	defer c.Close()
	fmt.Println(strings.Join(c.ListenAddrs(), ","))
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// kfakeChild is a kfake cluster in a child process of eosbench.
type kfakeChild struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addrs []string
}

func startKfakeChild(brokers int) (*kfakeChild, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("kfake process: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", serveKfakeEnv, brokers))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("kfake process: %w", err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stdin.Close()
		cmd.Wait()
		return nil, fmt.Errorf("kfake process: no addresses: %w", err)
	}
	return &kfakeChild{cmd: cmd, stdin: stdin, addrs: strings.Split(strings.TrimSpace(line), ",")}, nil
}

func (k *kfakeChild) stop() {
	k.stdin.Close()
	k.cmd.Wait()
}
