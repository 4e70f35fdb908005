package testenv

import (
	"strconv"
	"strings"
)

// Samples reads a Prometheus text exposition and returns the samples of
// the metric name (exactly that name: no _bucket, _sum or _count suffix
// unless given) keyed by the values of the labels by, joined with a space
// in that order, e.g. by "source_tag", "vip", "code" gives
// "maglev1 192.0.2.10 2xx". Samples with equal keys (other labels
// differing) are summed. Lines that do not parse are left out.
func Samples(text, name string, by ...string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		n, labels, v, ok := parseSample(line)
		if !ok || n != name {
			continue
		}
		key := make([]string, len(by))
		for i, l := range by {
			key[i] = labels[l]
		}
		out[strings.Join(key, " ")] += v
	}
	return out
}

// parseSample parses `name{l="v",...} value [timestamp]`.
func parseSample(line string) (name string, labels map[string]string, v float64, ok bool) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", nil, 0, false
	}
	labels = map[string]string{}
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return "", nil, 0, false
	}
	name, rest := line[:i], line[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, ", ")
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.Index(rest, `="`)
			if eq < 0 {
				return "", nil, 0, false
			}
			label := rest[:eq]
			rest = rest[eq+2:]
			var val strings.Builder
			closed := false
			for j := 0; j < len(rest); j++ {
				c := rest[j]
				if c == '\\' && j+1 < len(rest) {
					j++
					switch rest[j] {
					case 'n':
						val.WriteByte('\n')
					default:
						val.WriteByte(rest[j])
					}
					continue
				}
				if c == '"' {
					rest, closed = rest[j+1:], true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return "", nil, 0, false
			}
			labels[label] = val.String()
		}
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return "", nil, 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return name, labels, v, err == nil
}
