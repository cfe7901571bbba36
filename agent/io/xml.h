/* SPDX-License-Identifier: BSD-2-Clause */
/* libxml2, loaded on first use: with ICU and libstdc++ behind it, it costs
 * 2 MiB of RSS (250 KiB of it anonymous) as soon as it is mapped, so an
 * agent that never talks to supervisord or EC2 does not carry it (agentd is
 * linked without it). Shared by io/supervisor.c (XML-RPC) and io/ec2.c
 * (EC2 Query API replies). */
#pragma once

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdbool.h>

struct xml_lib {
	xmlDocPtr (*read_memory)(const char *buffer, int size, const char *url, const char *encoding, int options);
	xmlNodePtr (*root)(const xmlDoc *doc);
	xmlChar *(*content)(const xmlNode *cur);
	void (*free_doc)(xmlDocPtr doc);
	xmlFreeFunc *free; /* the library's xmlFree variable */
};

/* The functions above, valid once xml_load() returned true. */
extern struct xml_lib xml_lib;

/* dlopen()s libxml2.so.2 the first time (later calls return the first
 * answer). Returns false when the library or one of its symbols is
 * missing. Not thread-safe: the loop's thread only. */
bool xml_load(void);
/* Why xml_load() failed (dlerror()'s text, or a missing symbol's name). */
const char *xml_load_error(void);
