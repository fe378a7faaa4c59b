#ifndef KIRO_VERSION_H
#define KIRO_VERSION_H
#ifndef KIRO_VERSION
#define KIRO_VERSION "0.1.0"
#endif
#endif
