//go:build !unix

package metrics

import "io/fs"

func allocated(info fs.FileInfo) int64 { return info.Size() }
