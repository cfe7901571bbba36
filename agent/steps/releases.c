/* SPDX-License-Identifier: BSD-2-Clause */
/* The release listing (releases.h). */
#include "releases.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int releases_list(int rfd, char ***ret_names)
{
	int fd = openat(rfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;

	if (!dir) {
		int r = -errno;

		if (fd >= 0)
			(void)close(fd);
		return r;
	}
	names = xcalloc(1, sizeof(char *));
	while ((de = readdir(dir)))
		if (de->d_name[0] != '.') {
			names = xrealloc(names, (n + 2) * sizeof(char *));
			names[n++] = xstrdup(de->d_name);
			names[n] = NULL;
		}
	closedir(dir);
	qsort(names, n, sizeof(char *), name_cmp);
	*ret_names = names;
	return 0;
}
