# Owners are looked up by the step kinds when a plan is described or run,
# not by the planner (design.md §5 and §6): before setup has created the
# deploy user, `plan deploy` says the deploy.cfg step would fail for want of
# its owner, and still shows the content diff of deploy.cfg.
import grp
import pwd

from apps_fixtures import apps_stack
from conftest import wait_for

USER = "agentd-test-nosuchuser"
GROUP = "agentd-test-nosuchgroup"


def test_plan_shows_the_diff_of_a_file_whose_owner_does_not_exist_yet(make_agent, tmpdir_agent):
    for lookup, name in ((pwd.getpwnam, USER), (grp.getgrnam, GROUP)):
        try:
            lookup(name)
            raise AssertionError(f"{name} exists on this machine; the test needs it not to")
        except KeyError:
            pass
    stack = apps_stack("/nonexistent/repo")
    stack["deploy"]["plone_instances"].update(user=USER, group=GROUP)
    a = make_agent().start()
    a.ctl("pause", "plan only: the deploy user does not exist", check=0)
    a.write_stack(stack)
    wait_for(lambda: a.status()["source"]["stack_revision"], timeout=10, what="the stack to be loaded")

    for event in ("setup", "deploy"):
        steps = a.ctl_json("plan", event, "--app", "plone_instances")["steps"]
        if event == "setup":
            # The step that creates the user says, under a test root, that
            # it will not; nothing in the plan looked the user up.
            user = [s for s in steps if s["target"] == USER]
            assert user and "not created under root" in user[0]["message"], steps
            continue
        cfg = [s for s in steps if s["kind"] == "file" and s["target"].endswith("/deploy.cfg")]
        assert len(cfg) == 1, steps
        assert cfg[0]["action"] == "fail", cfg
        assert cfg[0]["error"] == f"unknown user {USER}", cfg
        assert cfg[0]["diff"].startswith("--- /srv/www/plone_instances/current/deploy.cfg\n"), cfg
        assert "+[buildout]\n" in cfg[0]["diff"], cfg
        # The text output shows the diff too.
        text = a.ctl("plan", event, "--app", "plone_instances", check=0).stdout
        assert "+[buildout]" in text, text
