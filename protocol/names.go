package protocol

import "strings"

// MaxNameLength is the longest valid topic or channel name in bytes,
// including an optional "#ephemeral" suffix.
const MaxNameLength = 64

// EphemeralSuffix marks a topic or channel that is never written to disk.
const EphemeralSuffix = "#ephemeral"

// IsValidName reports whether name is a valid topic or channel name:
// 1 to 64 bytes matching ^[.a-zA-Z0-9_-]+(#ephemeral)?$.
func IsValidName(name string) bool {
	if len(name) < 1 || len(name) > MaxNameLength {
		return false
	}
	base := strings.TrimSuffix(name, EphemeralSuffix)
	if base == "" {
		return false
	}
	for i := 0; i < len(base); i++ {
		if !isNameByte(base[i]) {
			return false
		}
	}
	return true
}

func isNameByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	case c == '.', c == '_', c == '-':
		return true
	}
	return false
}

// IsValidTopicName reports whether name is a valid topic name (see IsValidName).
func IsValidTopicName(name string) bool { return IsValidName(name) }

// IsValidChannelName reports whether name is a valid channel name (see IsValidName).
func IsValidChannelName(name string) bool { return IsValidName(name) }

// IsEphemeral reports whether a topic or channel name carries the ephemeral suffix.
func IsEphemeral(name string) bool { return strings.HasSuffix(name, EphemeralSuffix) }
