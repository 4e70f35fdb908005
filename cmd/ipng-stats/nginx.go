package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/ipng/ipng-stats/nginxlog"
)

func nginxSnippetCommand() *cli.Command {
	return &cli.Command{
		Name:  "nginx-snippet",
		Usage: "print the nginx log_format and access_log block that feeds the agent (include it in http{})",
		Description: "Prints the log_format ipng_stats (JSON-escaped) and the access_log directive for nginx.log_file " +
			"of the configuration, with instructions for the spool tmpfs. Save it as /etc/nginx/conf.d/ipng-stats.conf " +
			"and reload nginx; enable the ingest with nginx.enabled: true.",
		Flags: configFlags(),
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(c.App.Writer, nginxlog.Snippet(cfg.Nginx))
			return err
		},
	}
}
