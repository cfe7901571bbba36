/* SPDX-License-Identifier: BSD-2-Clause */
#include "xml.h"

#include <dlfcn.h>

#include <stdio.h>

struct xml_lib xml_lib;
static char load_error[256] = "not tried";

const char *xml_load_error(void)
{
	return load_error;
}

bool xml_load(void)
{
	static bool tried;
	void *h;

	if (tried)
		return xml_lib.free != NULL;
	tried = true;
	h = dlopen("libxml2.so.2", RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *why = dlerror();
		snprintf(load_error, sizeof(load_error), "%s", why ? why : "dlopen failed");
		return false;
	}
	xml_lib.read_memory = dlsym(h, "xmlReadMemory");
	xml_lib.root = dlsym(h, "xmlDocGetRootElement");
	xml_lib.content = dlsym(h, "xmlNodeGetContent");
	xml_lib.free_doc = dlsym(h, "xmlFreeDoc");
	xml_lib.free = dlsym(h, "xmlFree");
	if (!xml_lib.read_memory || !xml_lib.root || !xml_lib.content || !xml_lib.free_doc || !xml_lib.free) {
		xml_lib.free = NULL;
		snprintf(load_error, sizeof(load_error), "a symbol of libxml2.so.2 is missing");
		return false;
	}
	return true;
}
