package cdc

import "testing"

// TestCreateSlotCommand: Postgres 17 and later get a failover slot (it can
// be synchronized to a standby and survive a promotion); older servers the
// classic syntax, which they all understand. The snapshot is exported only
// for a recovery.
func TestCreateSlotCommand(t *testing.T) {
	for _, c := range []struct {
		major  int
		export bool
		want   string
	}{
		{13, false, "CREATE_REPLICATION_SLOT s LOGICAL pgoutput NOEXPORT_SNAPSHOT"},
		{15, true, "CREATE_REPLICATION_SLOT s LOGICAL pgoutput EXPORT_SNAPSHOT"},
		{16, false, "CREATE_REPLICATION_SLOT s LOGICAL pgoutput NOEXPORT_SNAPSHOT"},
		{17, false, "CREATE_REPLICATION_SLOT s LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER true)"},
		{17, true, "CREATE_REPLICATION_SLOT s LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER true)"},
		{18, true, "CREATE_REPLICATION_SLOT s LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER true)"},
		{0, false, "CREATE_REPLICATION_SLOT s LOGICAL pgoutput NOEXPORT_SNAPSHOT"}, // version unknown: the form every server takes
	} {
		if got := CreateSlotCommand("s", c.major, c.export); got != c.want {
			t.Errorf("major %d export %v: %q, want %q", c.major, c.export, got, c.want)
		}
	}
}

func TestParseMajor(t *testing.T) {
	for v, want := range map[string]int{
		"15.4 (Debian 15.4-1.pgdg120+1)": 15, "17beta1": 17, "9.6.24": 9, "18.0": 18, "": 0, "devel": 0,
	} {
		if got := parseMajor(v); got != want {
			t.Errorf("parseMajor(%q) = %d, want %d", v, got, want)
		}
	}
}
