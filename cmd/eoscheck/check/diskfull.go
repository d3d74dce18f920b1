package check

// The disk-full fault (--disk-fulls): eosproxy's data dir is a tmpfs of its
// own, mounted by eoscheck (root only), and now and then a file fills it to
// below eosproxy's reserve (--data-dir-reserve), leaving half the reserve
// free, for DiskFullFor. eosproxy must refuse batches meanwhile with
// KAFKA_STORAGE_ERROR (its "almost full" error line says it did), which
// producers retry, stay up, and lose and duplicate nothing. A fill to the
// last byte is not generated: badger then dies of SIGBUS (a crash, safe as
// any SIGKILL, but eosproxy stays down until there is room), which is what
// the reserve is for.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

const (
	// diskFullFS is the size of the tmpfs under the data dir.
	diskFullFS = 1 << 30
	// proxyReserve is eosproxy's default --data-dir-reserve; a fill
	// leaves half of it free.
	proxyReserve = 256 << 20
	// fillName is the filling file, in the data dir's filesystem.
	fillName = "eoscheck-disk-full"
)

// mountDataFS mounts a tmpfs of diskFullFS bytes at dir; unmount undoes it.
func mountDataFS(dir string) (unmount func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", diskFullFS), "tmpfs", dir).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("--disk-fulls puts eosproxy's data dir on a tmpfs of its own, which needs root: mount: %v: %s", err, out)
	}
	return func() { exec.Command("umount", "-l", dir).Run() }, nil
}

// fillDisk fills dir's filesystem to leave bytes free, with one file;
// empty removes it.
func fillDisk(dir string, leave uint64) (empty func() error, filled uint64, err error) {
	avail, err := freeBytes(dir)
	if err != nil {
		return nil, 0, err
	}
	path := filepath.Join(dir, fillName)
	empty = func() error { return os.Remove(path) }
	if avail <= leave {
		return func() error { return nil }, 0, nil
	}
	if err := allocate(path, int64(avail-leave)); err != nil {
		os.Remove(path)
		return nil, 0, fmt.Errorf("fill %s: %w", dir, err)
	}
	return empty, avail - leave, nil
}
