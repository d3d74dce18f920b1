package metrics

import (
	"io/fs"
	"path/filepath"
)

// DirBytes is the disk the files below dirs take (a directory named twice
// counts once). Blocks allocated are counted where the system tells them:
// badger's value log is a sparse file far larger than what it holds.
func DirBytes(dirs ...string) int64 {
	var n int64
	seen := map[string]bool{}
	for _, dir := range dirs {
		if dir == "" || seen[dir] {
			continue
		}
		seen[dir] = true
		filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil // a file removed meanwhile; keep counting the rest
			}
			if info, err := d.Info(); err == nil {
				n += allocated(info)
			}
			return nil
		})
	}
	return n
}
