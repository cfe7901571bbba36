/* SPDX-License-Identifier: BSD-2-Clause */
/* agent/io/ec2.c: the Query API's form encoding and its XML replies (EC2 API
 * reference, DescribeSnapshots / CreateSnapshot / error responses), hostile
 * XML included; the role credentials document of IMDS; and the prune choice
 * of the ec2_snapshot step. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "io/ec2.h"
#include "steps/step_ec2_snapshot.h"
#include "util.h"

static void test_form_encoding(void **state)
{
	struct buf b;

	buf_init(&b);
	ec2_form_add(&b, "Action", "CreateSnapshot");
	ec2_form_add(&b, "Description", "web1: automated snapshot of /dev/sdf (vol-0123)");
	ec2_form_add(&b, "TagSpecification.1.Tag.1.Value", "a+b=c&d~e_f.g-h é");
	ec2_form_add(&b, "Empty", "");
	assert_string_equal(b.data, "Action=CreateSnapshot"
				    "&Description=web1%3A%20automated%20snapshot%20of%20%2Fdev%2Fsdf%20%28vol-0123%29"
				    "&TagSpecification.1.Tag.1.Value=a%2Bb%3Dc%26d~e_f.g-h%20%C3%A9"
				    "&Empty=");
	buf_free(&b);
}

static const char describe_page1[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<DescribeSnapshotsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\n"
	"  <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>\n"
	"  <snapshotSet>\n"
	"    <item>\n"
	"      <snapshotId>snap-1234567890abcdef0</snapshotId>\n"
	"      <volumeId>vol-1234567890abcdef0</volumeId>\n"
	"      <status>completed</status>\n"
	"      <startTime>2024-05-01T08:00:12.000Z</startTime>\n"
	"      <progress>100%</progress>\n"
	"      <ownerId>123456789012</ownerId>\n"
	"      <volumeSize>15</volumeSize>\n"
	"      <description>web1: automated snapshot of /dev/sdf (vol-1234567890abcdef0)</description>\n"
	"      <encrypted>false</encrypted>\n"
	"      <tagSet>\n"
	"        <item><key>agentd:stack</key><value>prod &amp; co</value></item>\n"
	"        <item><key>agentd:job</key><value>ebs_snapshots</value></item>\n"
	"        <item><key>Empty</key></item>\n"
	"      </tagSet>\n"
	"    </item>\n"
	"    <item>\n"
	"      <snapshotId>snap-2</snapshotId><volumeId>vol-1234567890abcdef0</volumeId>\n"
	"      <status>pending</status><startTime>2024-05-02T08:00:00Z</startTime>\n"
	"    </item>\n"
	"  </snapshotSet>\n"
	"  <nextToken>abc/def==</nextToken>\n"
	"</DescribeSnapshotsResponse>\n";

static void test_parse_snapshots(void **state)
{
	struct ec2_snapshots s = { 0 };
	_cleanup_free_ char *next = NULL, *err = NULL;

	assert_int_equal(ec2_parse_snapshots(describe_page1, strlen(describe_page1), &s, &next, &err), 0);
	assert_null(err);
	assert_string_equal(next, "abc/def==");
	assert_int_equal(s.n, 2);
	assert_string_equal(s.v[0].id, "snap-1234567890abcdef0");
	assert_string_equal(s.v[0].state, "completed");
	assert_int_equal(s.v[0].start, 1714550412);
	assert_string_equal(ec2_snapshot_tag(&s.v[0], "agentd:stack"), "prod & co");
	assert_string_equal(ec2_snapshot_tag(&s.v[0], "Empty"), "");
	assert_null(ec2_snapshot_tag(&s.v[0], "Name"));
	assert_string_equal(s.v[1].state, "pending");
	assert_int_equal(s.v[1].start, 1714636800);

	/* A last page appends and has no token. */
	free(next);
	next = NULL;
	const char *last = "<DescribeSnapshotsResponse><snapshotSet/></DescribeSnapshotsResponse>";
	assert_int_equal(ec2_parse_snapshots(last, strlen(last), &s, &next, &err), 0);
	assert_null(next);
	assert_int_equal(s.n, 2);
	ec2_snapshots_free(&s);
}

static void test_parse_create_and_error(void **state)
{
	const char *ok = "<CreateSnapshotResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>x</requestId>"
			 "<snapshotId>snap-0abc</snapshotId><status>pending</status></CreateSnapshotResponse>";
	const char *e = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>InvalidSnapshot.InUse"
			"</Code><Message>The snapshot snap-1 is currently in use by ami-2</Message></Error></Errors>"
			"<RequestID>r</RequestID></Response>";
	_cleanup_free_ char *id = NULL, *err = NULL, *code = NULL, *msg = NULL;

	assert_int_equal(ec2_parse_create_snapshot(ok, strlen(ok), &id, &err), 0);
	assert_string_equal(id, "snap-0abc");
	assert_int_equal(ec2_parse_error(e, strlen(e), &code, &msg), 0);
	assert_string_equal(code, "InvalidSnapshot.InUse");
	assert_string_equal(msg, "The snapshot snap-1 is currently in use by ami-2");
	free(code);
	free(msg);
	code = msg = NULL;
	assert_int_equal(ec2_parse_error(ok, strlen(ok), &code, &msg), -EBADMSG);
	assert_null(code);
	free(id);
	id = NULL;
	assert_true(ec2_parse_create_snapshot(e, strlen(e), &id, &err) < 0);
	assert_non_null(err);
}

static void expect_refused(const char *xml, size_t len)
{
	struct ec2_snapshots s = { 0 };
	_cleanup_free_ char *next = NULL, *err = NULL, *code = NULL, *msg = NULL;

	assert_true(ec2_parse_snapshots(xml, len, &s, &next, &err) < 0);
	assert_non_null(err);
	assert_int_equal(s.n, 0);
	assert_null(next);
	ec2_snapshots_free(&s);
	assert_int_equal(ec2_parse_error(xml, len, &code, &msg), -EBADMSG);
}

static void test_hostile_xml(void **state)
{
	/* Billion laughs: a DTD is refused, nothing is expanded. */
	const char *laughs = "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"aaaaaaaaaa\">"
			     "<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">]>"
			     "<DescribeSnapshotsResponse><snapshotSet><item><snapshotId>&c;</snapshotId>"
			     "<status>completed</status></item></snapshotSet></DescribeSnapshotsResponse>";
	/* An external entity: no network, no file read. */
	const char *xxe = "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
			  "<Response><Errors><Error><Code>&x;</Code></Error></Errors></Response>";
	const char *malformed = "<DescribeSnapshotsResponse><snapshotSet><item>";
	const char *wrong = "<Other><snapshotSet/></Other>";
	const char *noid = "<DescribeSnapshotsResponse><snapshotSet><item><status>completed</status></item>"
			   "</snapshotSet></DescribeSnapshotsResponse>";
	struct buf deep;

	expect_refused(laughs, strlen(laughs));
	expect_refused(xxe, strlen(xxe));
	expect_refused(malformed, strlen(malformed));
	expect_refused(wrong, strlen(wrong));
	expect_refused(noid, strlen(noid));
	expect_refused("", 0);
	expect_refused("\0\0\0", 3);

	/* Nesting far beyond libxml2's default depth limit. */
	buf_init(&deep);
	for (int i = 0; i < 100000; i++)
		buf_puts(&deep, "<a>");
	expect_refused(deep.data, deep.len);
	buf_free(&deep);

	/* Over the size cap: refused before parsing. */
	char *huge = xmalloc(EC2_REPLY_MAX + 2);
	memset(huge, ' ', EC2_REPLY_MAX + 1);
	huge[EC2_REPLY_MAX + 1] = '\0';
	expect_refused(huge, EC2_REPLY_MAX + 1);
	free(huge);
}

static void test_tags_and_text_bounded(void **state)
{
	struct buf b;
	struct ec2_snapshots s = { 0 };
	_cleanup_free_ char *next = NULL, *err = NULL;

	buf_init(&b);
	buf_puts(&b, "<DescribeSnapshotsResponse><snapshotSet><item><snapshotId>snap-1</snapshotId><status>completed"
		     "</status><tagSet>");
	for (int i = 0; i <= EC2_TAGS_MAX; i++)
		buf_printf(&b, "<item><key>k%d</key><value>v</value></item>", i);
	buf_puts(&b, "</tagSet></item></snapshotSet></DescribeSnapshotsResponse>");
	assert_int_equal(ec2_parse_snapshots(b.data, b.len, &s, &next, &err), -E2BIG);
	assert_int_equal(s.n, 0);
	free(err);
	err = NULL;
	ec2_snapshots_free(&s);

	/* A long value is cut; control characters do not get through. */
	buf_reset(&b);
	buf_puts(&b, "<DescribeSnapshotsResponse><snapshotSet><item><snapshotId>snap-1&#10;x</snapshotId>"
		     "<status>completed</status><startTime>bad</startTime><tagSet><item><key>k</key><value>");
	for (int i = 0; i < 2 * EC2_TEXT_MAX; i++)
		buf_puts(&b, "v");
	buf_puts(&b, "</value></item></tagSet></item></snapshotSet></DescribeSnapshotsResponse>");
	assert_int_equal(ec2_parse_snapshots(b.data, b.len, &s, &next, &err), 0);
	assert_string_equal(s.v[0].id, "snap-1?x");
	assert_int_equal(s.v[0].start, -1);
	assert_int_equal(strlen(ec2_snapshot_tag(&s.v[0], "k")), EC2_TEXT_MAX);
	ec2_snapshots_free(&s);
	buf_free(&b);
}

static void test_time(void **state)
{
	assert_int_equal(ec2_parse_time("1970-01-01T00:00:00Z"), 0);
	assert_int_equal(ec2_parse_time("2024-02-29T23:59:59.999Z"), 1709251199);
	assert_int_equal(ec2_parse_time("2024-02-29T23:59:59+00:00"), 1709251199);
	assert_int_equal(ec2_parse_time("2024-02-29 23:59:59Z"), -1);
	assert_int_equal(ec2_parse_time("2024-13-01T00:00:00Z"), -1);
	assert_int_equal(ec2_parse_time("2024-01-01T00:00:00+02:00"), -1);
	assert_int_equal(ec2_parse_time(NULL), -1);
}

static void test_role_creds(void **state)
{
	const char *good = "{\"Code\": \"Success\", \"LastUpdated\": \"2024-05-01T08:00:00Z\", \"Type\": \"AWS-HMAC\", "
			   "\"AccessKeyId\": \"ASIAX\", \"SecretAccessKey\": \"sec/ret\", \"Token\": \"tok==\", "
			   "\"Expiration\": \"2024-05-01T14:00:00Z\"}";
	const char *bad = "{\"Code\": \"Success\", \"AccessKeyId\": \"ASIAX\", \"SecretAccessKey\": \"se\\ncret\"}";
	struct ec2_creds c;
	_cleanup_free_ char *err = NULL;

	assert_int_equal(ec2_parse_role_creds(good, strlen(good), &c, &err), 0);
	assert_string_equal(c.key, "ASIAX");
	assert_string_equal(c.secret, "sec/ret");
	assert_string_equal(c.token, "tok==");
	assert_int_equal(c.expiration, 1714572000);
	ec2_creds_clear(&c);
	assert_int_equal(ec2_parse_role_creds(bad, strlen(bad), &c, &err), -EBADMSG);
	assert_null(strstr(err, "se\ncret"));
	assert_null(c.key);
	free(err);
	err = NULL;
	assert_int_equal(ec2_parse_role_creds("[]", 2, &c, &err), -EBADMSG);
}

static void snap(struct ec2_snapshot *s, const char *id, const char *state, int64_t start, const char *stack,
		 const char *job)
{
	*s = (struct ec2_snapshot){ .id = (char *)id, .state = (char *)state, .start = start };
	s->tags = xcalloc(2, sizeof(*s->tags));
	if (stack)
		s->tags[s->n_tags++] = (struct ec2_tag){ .key = (char *)"agentd:stack", .value = (char *)stack };
	if (job)
		s->tags[s->n_tags++] = (struct ec2_tag){ .key = (char *)"agentd:job", .value = (char *)job };
}

static void test_prune_pick(void **state)
{
	struct ec2_snapshot v[7];
	size_t *idx = NULL, n;

	snap(&v[0], "a", "completed", 500, "prod", "ebs_snapshots");
	snap(&v[1], "b", "completed", 100, "prod", "ebs_snapshots");
	snap(&v[2], "c", "completed", 50, NULL, NULL);             /* not ours: never */
	snap(&v[3], "d", "completed", 10, "staging", "ebs_snapshots"); /* another stack */
	snap(&v[4], "e", "error", 20, "prod", "ebs_snapshots");    /* not completed */
	snap(&v[5], "f", "completed", 300, "prod", "ebs_snapshots");
	snap(&v[6], "g", "completed", 30, "prod", NULL);           /* one tag only */

	n = ec2_snapshot_prune_pick(v, 7, "prod", "ebs_snapshots", 2, &idx);
	/* Three of ours + the new one, keep 2: the two oldest go. */
	assert_int_equal(n, 2);
	assert_int_equal(idx[0], 1);
	assert_int_equal(idx[1], 5);
	free(idx);
	n = ec2_snapshot_prune_pick(v, 7, "prod", "ebs_snapshots", 4, &idx);
	assert_int_equal(n, 0);
	free(idx);
	n = ec2_snapshot_prune_pick(v, 7, "prod", "ebs_snapshots", 1, &idx);
	assert_int_equal(n, 3);
	free(idx);
	for (int i = 0; i < 7; i++)
		free(v[i].tags);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_form_encoding),
		cmocka_unit_test(test_parse_snapshots),
		cmocka_unit_test(test_parse_create_and_error),
		cmocka_unit_test(test_hostile_xml),
		cmocka_unit_test(test_tags_and_text_bounded),
		cmocka_unit_test(test_time),
		cmocka_unit_test(test_role_creds),
		cmocka_unit_test(test_prune_pick),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
