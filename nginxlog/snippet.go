package nginxlog

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ipng/ipng-stats/config"
)

// LogFormatName is the name of the log_format the snippet defines.
const LogFormatName = "ipng_stats"

// fieldOrder is the log_format keys in order: nginx variable name = JSON
// key. The first eight are required by Parse; connection (kept-alive
// connections are looked up once) is used; connection_time and msec are
// parsed but no longer needed (the ring of stamped 4-tuples tells evicted
// from never-stamped entries); host goes to the logtail. More keys
// (request_method, request_uri, http_user_agent...) may be added for the
// logtail; every extra byte costs nginx and the agent a little.
func fieldOrder() []string {
	return []string{"server_addr", "server_port", "remote_addr", "remote_port", "status", "request_length",
		"bytes_sent", "request_time", "connection_time", "msec", "connection", "host"}
}

// LogFormat returns the log_format directive the ingest expects. Every value
// is quoted, so that an empty variable still gives valid JSON.
func LogFormat() string {
	var b strings.Builder
	fmt.Fprintf(&b, "log_format %s escape=json '{", LogFormatName)
	for i, f := range fieldOrder() {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"%s":"$%s"`, f, f)
	}
	b.WriteString("}';")
	return b.String()
}

// AccessLog returns the access_log directive for log file path.
func AccessLog(path string) string {
	return fmt.Sprintf("access_log %s %s buffer=64k flush=1s;", path, LogFormatName)
}

// Snippet returns the nginx configuration to include in the http{} block
// (Debian: /etc/nginx/conf.d/ipng-stats.conf), with instructions for the
// spool tmpfs, for cfg (zero values take the defaults).
func Snippet(cfg config.NginxConfig) string {
	cfg = cfg.WithDefaults()
	dir := filepath.Dir(cfg.LogFile)
	return fmt.Sprintf(`# ipng-stats: per-interface accounting of nginx traffic.
# Save as /etc/nginx/conf.d/ipng-stats.conf (included in http{} on Debian),
# then: nginx -t && nginx -s reload
#
# The agent (nginx.enabled: true) consumes %[1]s and frees what it
# has read. Give its directory a dedicated tmpfs: its size bounds memory
# while the agent is down (nginx then fails writes, never blocks), e.g. in
# /etc/fstab, before nginx starts:
#   tmpfs %[2]s tmpfs size=256m,mode=0710,gid=www-data,nosuid,nodev,noexec 0 0
# and: mkdir -p %[2]s && mount %[2]s
# nginx's master (root) creates the file and hands it to the worker user
# (www-data) on reopen; the workers reopen it by path, so the directory is
# searchable by their group (gid=) and by nobody else: the file holds the
# clients' addresses.
#
# A server{} block with its own access_log directive does not inherit this
# one: add the access_log line below to such blocks too. Do not rotate this
# file with logrotate: the agent frees it as it reads (rotation is followed
# if you do).

%[3]s
%[4]s
`, cfg.LogFile, dir, LogFormat(), AccessLog(cfg.LogFile))
}
